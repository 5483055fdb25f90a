"""``xbuild bench`` (exporters.bench, bench_backends, bench_train, bench_cli): rows, table and JSON.

No speed is asserted anywhere: figures are reported by the bench, never tested against a target.
Heavy pieces (compiling the training step of the real network) are kept off by using a tiny
model or by narrowing the training configurations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from torch import nn

from exporters import bench, bench_backends, bench_train
from exporters.bench import run_bench
from exporters.bench_timing import BenchSettings
from xception_build.errors import BackendUnavailable
from xception_build.training import TrainOptions

CIFAR = Path(__file__).resolve().parents[2] / "specs" / "xception_cifar.yaml"
FAST = dict(warmup=1, min_reps=2, budget_s=0.0)


def tiny() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.Conv2d(8, 16, 1, bias=False),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    return model


def only(configs: list[str]) -> Callable[[torch.device], list[tuple[str, TrainOptions | None, str]]]:
    real = bench_train.train_configs
    return lambda device: [c for c in real(device) if c[0] in configs]


def test_rows_for_every_backend_and_batch_with_unavailable_ones_kept() -> None:
    settings = BenchSettings(batches=(1, 3), backends=("torch", "tensorrt"), **FAST)
    tasks: list[str] = []
    report = run_bench(tiny, (3, 8, 8), 4, settings, on_task=tasks.append)
    assert [(r.backend, r.batch) for r in report.inference] == [("torch", 1), ("torch", 3),
                                                                 ("tensorrt", 1), ("tensorrt", 3)]
    assert tasks == ["torch batch 1", "torch batch 3", "tensorrt batch 1", "tensorrt batch 3"]
    for row in report.inference[:2]:
        assert row.status == "ok" and row.reps >= 2 and row.min_ms <= row.p50_ms <= row.p90_ms
        assert row.images_per_s == pytest.approx(1e3 * row.batch / row.p50_ms)
        assert row.fraction_flops is not None and row.fraction_flops > 0
    if not torch.cuda.is_available():
        for row in report.inference[2:]:
            assert row.status == "unavailable" and "TensorRT" in row.reason
    assert report.analytic["macs"] > 0 and report.environment["device"] == "cpu"


def test_compile_and_onnxruntime_backends_run_a_small_model() -> None:
    pytest.importorskip("onnxruntime")
    torch._dynamo.reset()
    report = run_bench(tiny, (3, 8, 8), 4, BenchSettings(batches=(1, 2), backends=("compile", "onnxruntime"),
                                                         **FAST))
    assert [r.status for r in report.inference] == ["ok"] * 4, [r.reason for r in report.inference]
    assert all(r.setup_s is not None and r.setup_s > 0 for r in report.inference)


def test_onnxruntime_without_the_provider_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import exporters.runners

    monkeypatch.setattr(exporters.runners, "onnxruntime_unavailable", lambda device: "no provider here")
    report = run_bench(tiny, (3, 8, 8), 4, BenchSettings(batches=(1,), backends=("onnxruntime",), **FAST))
    assert (report.inference[0].status, report.inference[0].reason) == ("unavailable", "no provider here")


def test_tensorrt_rows_build_one_static_engine_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TensorRT wiring, with the engine build and runner faked (no TensorRT or GPU needed)."""
    from exporters import tensorrt_backend
    from exporters.runners import INPUT_NAME

    built: list[tuple[str, str, bool]] = []

    class FakeRunner:
        def __init__(self, plan: Path) -> None:
            self.plan = plan

        def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"logits": np.zeros((feeds[INPUT_NAME].shape[0], 4), np.float32)}

    def fake_build(onnx_path: Path, plan: Path, settings: object, *, timing_cache: Path | None = None) -> dict:
        assert onnx_path.is_file() and timing_cache is not None
        built.append((plan.name, str(settings.profile), settings.precision))  # type: ignore[attr-defined]
        return {}

    monkeypatch.setattr(tensorrt_backend, "require_tensorrt", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "build_engine", fake_build)
    monkeypatch.setattr(tensorrt_backend, "TensorRTRunner", FakeRunner)
    backend = bench_backends.make_backend("tensorrt", tiny(), torch.device("cuda"), (3, 8, 8), (1, 4))
    try:
        assert backend.runner(4)()["logits"].shape == (4, 4)
        backend.runner(1)()
    finally:
        backend.close()
    assert built == [("model.b4.plan", "4:4:4", "fp32"), ("model.b1.plan", "1:1:1", "fp32")]
    with pytest.raises(BackendUnavailable, match="CUDA only"):
        bench_backends.make_backend("tensorrt", tiny(), torch.device("cpu"), (3, 8, 8), (1,))


def test_a_broken_backend_is_a_failed_row_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def broken(*_args: object) -> object:
        attempts.append("compile")
        raise RuntimeError("engine exploded\nsecond line")

    real = bench_backends.make_backend
    monkeypatch.setattr(bench, "make_backend", lambda name, *a: broken() if name == "compile" else real(name, *a))
    report = run_bench(tiny, (3, 8, 8), 4, BenchSettings(batches=(1, 2), backends=("compile", "torch"), **FAST))
    assert [r.status for r in report.inference] == ["failed", "failed", "ok", "ok"]
    assert report.inference[1].reason == "RuntimeError: engine exploded"
    assert attempts == ["compile"]  # set up once, not once per batch


def test_training_rows_compare_with_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_train, "train_configs", only(["fp32", "bf16", "fp16", "channels_last"]))
    settings = BenchSettings(batches=(2,), backends=("torch",), train=True, **FAST)
    report = run_bench(tiny, (3, 8, 8), 4, settings, make_reference=tiny)
    rows = {(r.config, r.model): r for r in report.train}
    ours, ref = rows[("fp32", "xception-build")], rows[("fp32", "timm legacy_xception")]
    assert ours.status == ref.status == "ok" and ours.batch == 2
    assert ours.vs_reference == pytest.approx(ours.images_per_s / ref.images_per_s)
    assert ours.peak_memory_bytes and ours.peak_memory_bytes > 0 and ours.memory_kind
    assert rows[("bf16", "xception-build")].status == "ok"
    assert rows[("channels_last", "xception-build")].status == "ok"
    if not torch.cuda.is_available():
        assert rows[("fp16", "xception-build")].status == "skipped"
        assert "GPU" in rows[("fp16", "xception-build")].reason


def test_compiled_training_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_train, "train_configs", only(["all"]))
    report = run_bench(tiny, (3, 8, 8), 4, BenchSettings(batches=(2,), backends=("torch",), train=True, **FAST),
                       reference_unavailable="timm is not importable here")
    ours, ref = report.train
    assert ours.config == "all" and ours.status == "ok", ours.reason
    assert (ref.status, ref.reason) == ("unavailable", "timm is not importable here")
    assert ours.vs_reference is None


def test_timm_reference_is_available_or_says_why() -> None:
    factory, reason = bench_train.timm_reference(10)
    try:
        import timm  # noqa: F401
    except ImportError:
        assert factory is None and "timm is not importable" in reason
    else:
        assert factory is not None and factory()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_cpu_peak_memory_is_the_resident_set_high_water_mark() -> None:
    assert bench_train._rss_peak() > 10 * 2**20  # a torch process holds well over 10 MB


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_prints_the_table_and_writes_json(run: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run("bench", CIFAR, "--device", "cpu", "--batch", "1,2", "--backends", "torch,tensorrt",
                 "--budget", "0", "--min-reps", "2", "--warmup", "1", "--no-progress", "--json", out)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "analytic per image" in text and "MMAC" in text and "arithmetic intensity" in text
    assert "torch" in text and "tensorrt" in text and "p50 ms" in text
    data = json.loads(out.read_text())
    assert {r["backend"] for r in data["inference"]} == {"torch", "tensorrt"}
    assert data["analytic"]["macs"] > 0 and data["environment"]["spec_hash"]
    if not torch.cuda.is_available():
        assert "unavailable: TensorRT" in text


def test_cli_train_rows_in_the_table(run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_train, "train_configs", only(["fp32"]))
    result = run("bench", CIFAR, "--device", "cpu", "--batch", "2", "--backends", "torch", "--train",
                 "--budget", "0", "--min-reps", "1", "--warmup", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "training step (batch 2" in result.output and "xception-build" in result.output
    assert "timm legacy_xception" in result.output and "peak mem:" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", "0,8"], "--batch '0,8'"),
    (["--batch", "x"], "comma-separated positive integers"),
    (["--backends", "torch,tvm"], "choose from torch, compile, onnxruntime, tensorrt"),
])
def test_cli_user_errors_exit_2(run: Callable[..., Result], args: list[str], message: str) -> None:
    result = run("bench", CIFAR, "--device", "cpu", *args)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the exit code on machines without CUDA")
def test_cli_cuda_without_a_gpu_exits_3(run: Callable[..., Result]) -> None:
    result = run("bench", CIFAR, "--device", "cuda", "--no-progress")
    assert result.exit_code == BackendUnavailable.exit_code and "no CUDA device" in result.output


def test_help_has_an_example(run: Callable[..., Result]) -> None:
    result = run("bench", "--help")
    assert result.exit_code == 0 and "xbuild bench specs/xception.yaml --device cpu" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bench_with_every_training_config(run: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    result = run("bench", CIFAR, "--device", "cuda", "--batch", "1,8", "--train", "--budget", "0.2",
                 "--no-progress", "--json", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    ours = [r for r in data["train"] if r["model"] == "xception-build"]
    assert all(r["status"] == "ok" for r in ours), ours
    assert all(r["memory_kind"].startswith("torch.cuda.max_memory_allocated") for r in ours)


def test_bench_spec_builds_the_model_once_and_hashes_the_spec_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Input size and classes come from the spec, not from a throw-away probe model."""
    import xception_build
    import xception_build.spec

    calls: list[str] = []
    real_build, real_hash = xception_build.build_model, xception_build.spec.spec_hash

    def build(*args: object, **kwargs: object) -> nn.Module:
        calls.append("build_model")
        return real_build(*args, **kwargs)  # type: ignore[arg-type]

    def digest(spec: object) -> str:
        calls.append("spec_hash")
        return real_hash(spec)  # type: ignore[arg-type]

    monkeypatch.setattr(xception_build, "build_model", build)
    monkeypatch.setattr(xception_build.spec, "spec_hash", digest)
    report = bench.bench_spec(str(CIFAR), BenchSettings(batches=(1,), backends=("torch",), **FAST))
    assert sorted(calls) == ["build_model", "spec_hash"]
    assert report.analytic["input_size"] == (3, 32, 32) and report.inference[0].status == "ok"
    assert report.environment["spec_hash"] == real_hash(xception_build.load_spec(CIFAR))
    assert str(report.environment["label"]).endswith(f"({str(report.environment['spec_hash'])[:12]})")


def test_tensorrt_rows_are_compared_with_the_plain_fp32_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT engines are built with TF32 off: their % of peak is of the fp32 peak, even where
    cuDNN's TF32 makes the other fp32 rows compare with the TF32 peak."""
    from xception_build.analysis import DevicePeak

    class Instant:
        def runner(self, batch: int) -> Callable[[], None]:
            return lambda: None

        def close(self) -> None:
            pass

    monkeypatch.setattr(bench, "precision_of", lambda device, amp="none": "tf32")  # CUDA, TF32 allowed
    monkeypatch.setattr(bench, "device_peak", lambda device: DevicePeak("test", {"fp32": 1e12, "tf32": 8e12}))
    monkeypatch.setattr(bench, "make_backend", lambda *args: Instant())
    settings = BenchSettings(batches=(1,), backends=("torch", "tensorrt"), **FAST)
    report = run_bench(tiny, (3, 8, 8), 4, settings)
    flops = float(report.analytic["flops"])  # type: ignore[arg-type]
    torch_row, trt_row = report.inference
    assert torch_row.fraction_flops == pytest.approx(flops * torch_row.images_per_s / 8e12)
    assert trt_row.fraction_flops == pytest.approx(flops * trt_row.images_per_s / 1e12)


def test_peak_precision_per_backend() -> None:
    saved = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        cuda, cpu = torch.device("cuda"), torch.device("cpu")
        assert bench.peak_precision("torch", cuda) == bench.peak_precision("onnxruntime", cuda) == "tf32"
        assert bench.peak_precision("tensorrt", cuda) == "fp32"
        assert bench.peak_precision("tensorrt", cpu) == bench.peak_precision("torch", cpu) == "fp32"
    finally:
        torch.backends.cudnn.allow_tf32 = saved
