"""``xbuild bench`` (exporters.bench): rows, table and JSON.

No speed is asserted anywhere: figures are reported by the bench, never tested against a target.
Heavy pieces (compiling the training step of the real network) are kept off by using a tiny
model or by narrowing the training configurations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import Result
from torch import nn

from exporters.bench import train as bench_train
from exporters.bench.peaks import DevicePeak, peak_precision
from exporters.bench.run import bench_spec, run_bench
from exporters.bench.timing import BenchSettings, Timing, fill_row
from exporters.onnx.runtime import onnxruntime_unavailable
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
    settings = BenchSettings(batches=(1, 3), backends=("pytorch-cpu", "tensorrt"), **FAST)
    tasks: list[str] = []
    report = run_bench(tiny, (3, 8, 8), 4, settings, on_task=tasks.append)
    assert [(r.backend, r.batch) for r in report.inference] == [("pytorch-cpu", 1), ("pytorch-cpu", 3),
                                                                 ("tensorrt", 1), ("tensorrt", 3)]
    # a batch size at a time: every backend of it is set up, then all are timed round-robin together
    assert tasks == ["pytorch-cpu fp32 batch 1", "tensorrt fp32 batch 1", "pytorch-cpu fp32 batch 3",
                     "tensorrt fp32 batch 3"]
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
    settings = BenchSettings(batches=(1, 2), backends=("pytorch-compile-cpu", "onnxruntime-cpu"), **FAST)
    report = run_bench(tiny, (3, 8, 8), 4, settings)
    assert [r.status for r in report.inference] == ["ok"] * 4, [r.reason for r in report.inference]
    assert all(r.setup_s is not None and r.setup_s > 0 for r in report.inference)


@pytest.mark.skipif(onnxruntime_unavailable("cuda") is None, reason="onnxruntime-gpu and a GPU are here")
def test_onnxruntime_without_the_provider_is_unavailable_and_a_run_of_nothing_exits_3() -> None:
    settings = BenchSettings(batches=(1,), backends=("onnxruntime-cuda",), **FAST)
    with pytest.raises(BackendUnavailable, match="none of the requested backends can run here; onnxruntime-cuda:"):
        run_bench(tiny, (3, 8, 8), 4, settings)
    report = run_bench(tiny, (3, 8, 8), 4, BenchSettings(batches=(1,), backends=("onnxruntime-cuda", "pytorch-cpu"),
                                                         **FAST))
    assert [r.status for r in report.inference] == ["unavailable", "ok"]


def test_tensorrt_rows_run_one_static_engine_per_batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An engine tuned for a wide profile is slow at small batches: each batch gets its own, built
    from the same ONNX export (engine build faked: no TensorRT or GPU is needed here)."""
    from exporters.bench.inference import ArtifactFiles
    from exporters.tensorrt import engine

    built: list[tuple[str, str, str]] = []

    def fake_build(onnx_path: Path, plan: Path, settings: engine.BuildSettings, *,
                   timing_cache: Path | None = None) -> dict[str, object]:
        assert onnx_path.is_file() and timing_cache is not None
        built.append((plan.name, str(settings.profile), settings.precision))
        return {}

    monkeypatch.setattr(engine, "build_engine", fake_build)
    monkeypatch.setattr(engine, "major_version", lambda: 10)
    files = ArtifactFiles(tiny(), (3, 8, 8), (1, 4))
    try:
        files.plan(4)
        files.plan(1)
    finally:
        files.close()
    assert built == [("model.fp32.b4.plan", "4:4:4", "fp32"), ("model.fp32.b1.plan", "1:1:1", "fp32")]


EXPORT_ATTEMPTS: list[str] = []  # module level: the exporter traces a copy of the model


class Unexportable(nn.Module):
    """Runs in PyTorch; its ONNX export fails (the export traces it): a backend that cannot be set up."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            EXPORT_ATTEMPTS.append("export")
            raise RuntimeError("engine exploded\nsecond line")
        return self.inner(x)


def test_a_broken_backend_is_a_failed_row_not_a_crash() -> None:
    pytest.importorskip("onnxruntime")
    model = Unexportable()
    EXPORT_ATTEMPTS.clear()
    settings = BenchSettings(batches=(1, 2), backends=("onnxruntime-cpu", "pytorch-cpu"), **FAST)
    report = run_bench(lambda: model, (3, 8, 8), 4, settings)
    assert [r.status for r in report.inference] == ["failed", "failed", "ok", "ok"]
    reason = report.inference[1].reason  # the exporter's own error, on one plain line
    assert reason.startswith("TorchExportError: ") and "\n" not in reason and "\x1b" not in reason
    assert EXPORT_ATTEMPTS == ["export"]  # set up once, not once per batch


def test_training_rows_compare_with_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_train, "train_configs", only(["fp32", "bf16", "fp16", "channels_last"]))
    settings = BenchSettings(batches=(2,), backends=("pytorch-cpu",), train=True, **FAST)
    report = run_bench(tiny, (3, 8, 8), 4, settings, make_reference=tiny)
    rows = {(r.config, r.model): r for r in report.train}
    ours, ref = rows[("fp32", "xception-build")], rows[("fp32", "timm legacy_xception")]
    assert ours.status == ref.status == "ok" and ours.batch == 2
    assert ours.vs_reference == pytest.approx(ours.images_per_s / ref.images_per_s)
    assert ours.peak_memory_bytes and ours.peak_memory_bytes > 10 * 2**20 and ours.memory_kind  # a torch process
    assert rows[("bf16", "xception-build")].status == "ok"
    assert rows[("channels_last", "xception-build")].status == "ok"
    if not torch.cuda.is_available():
        assert rows[("fp16", "xception-build")].status == "skipped"
        assert "GPU" in rows[("fp16", "xception-build")].reason


def test_compiled_training_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_train, "train_configs", only(["all"]))
    report = run_bench(tiny, (3, 8, 8), 4, BenchSettings(batches=(2,), backends=("pytorch-cpu",), train=True,
                                                         **FAST),
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


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_prints_the_table_or_json(run: Callable[..., Result]) -> None:
    args = ["bench", CIFAR, "--device", "cpu", "--batch", "1,2", "--backend", "pytorch-cpu,tensorrt",
            "--budget", "0", "--min-reps", "2", "--warmup", "1", "--no-progress"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "analytic per image" in text and "MMAC" in text and "arithmetic intensity" in text
    assert "pytorch-cpu" in text and "tensorrt" in text and "p50 ms" in text
    if not torch.cuda.is_available():
        trt_rows = [line for line in text.splitlines() if line.startswith("tensorrt ")]
        assert len(trt_rows) == 2 and all("unavailable: " in r and "TensorRT" in r for r in trt_rows)
    as_json = run(*args, "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert {r["backend"] for r in data["inference"]} == {"pytorch-cpu", "tensorrt"}
    assert data["analytic"]["macs"] > 0 and data["environment"]["spec_hash"]


def test_cli_train_rows_in_the_table(run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_train, "train_configs", only(["fp32"]))
    result = run("bench", CIFAR, "--device", "cpu", "--batch", "2", "--backend", "pytorch-cpu", "--train",
                 "--budget", "0", "--min-reps", "1", "--warmup", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "training step (batch 2" in result.output and "xception-build" in result.output
    assert "timm legacy_xception" in result.output and "peak mem:" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", "0,8"], "--batch '0,8': batch sizes must be positive"),
    (["--batch", "x"], "expected MIN:OPT:MAX"),
    (["--backend", "pytorch-cpu,onnx"], "--backend 'onnx': unknown backend\n  hint: did you mean"),
    (["--backends", "torch"], "valid choices: pytorch-cpu, pytorch-cuda"),
    (["--min-reps", "0"], "--min-reps"),
])
def test_cli_user_errors_exit_2_before_any_work(run: Callable[..., Result], args: list[str], message: str) -> None:
    result = run("bench", CIFAR, "--device", "cpu", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.startswith("error: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the exit code on machines without CUDA")
def test_cli_cuda_without_a_gpu_exits_3(run: Callable[..., Result]) -> None:
    result = run("bench", CIFAR, "--device", "cuda", "--no-progress")
    assert result.exit_code == BackendUnavailable.exit_code and "no CUDA device" in result.output


def test_help_has_an_example(run: Callable[..., Result]) -> None:
    result = run("bench", "--help")
    assert result.exit_code == 0 and "xbuild bench specs/xception.yaml --device cpu" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bench_with_every_training_config(run: Callable[..., Result]) -> None:
    result = run("bench", CIFAR, "--device", "cuda", "--batch", "1,8", "--train", "--budget", "0.2",
                 "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    ours = [r for r in data["train"] if r["model"] == "xception-build"]
    assert all(r["status"] == "ok" for r in ours), ours
    assert all(r["memory_kind"].startswith("torch.cuda.max_memory_allocated") for r in ours)


def test_bench_spec_records_the_spec_it_measured() -> None:
    import xception_build
    from xception_build.spec import spec_hash

    report = bench_spec(str(CIFAR), BenchSettings(batches=(1,), backends=("pytorch-cpu",), **FAST))
    assert report.analytic["input_size"] == (3, 32, 32) and report.inference[0].status == "ok"
    assert report.environment["spec_hash"] == spec_hash(xception_build.load_spec(CIFAR))
    assert str(report.environment["label"]).endswith(f"({str(report.environment['spec_hash'])[:12]})")


def test_tensorrt_rows_are_compared_with_the_plain_fp32_peak() -> None:
    """TensorRT engines are built with TF32 off: their % of peak is of the fp32 peak, even where
    cuDNN's TF32 makes the other fp32 rows on the GPU compare with the TF32 peak."""
    saved = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        cuda, cpu = torch.device("cuda"), torch.device("cpu")
        assert peak_precision(cuda) == "tf32" and peak_precision(cuda, strict_fp32=True) == "fp32"
        assert peak_precision(cpu) == "fp32" and peak_precision(cuda, "bf16") == "bf16"
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def test_an_emulated_precision_is_compared_with_the_fp32_peak() -> None:
    from exporters.bench.analysis import analyse
    from exporters.bench.timing import TrainRow

    figures = analyse(tiny(), (3, 8, 8))
    peak = DevicePeak("cpu", {"fp32": 1e12}, emulated=("bf16",))
    row = TrainRow(config="bf16", model="m", batch=2)
    fill_row(row, Timing((0.5,)), figures, peak, "bf16", training=True)
    assert row.fraction_flops == pytest.approx(3 * 2 * figures.macs * 4 / 1e12)


def test_int8_and_fp32_artifacts_are_timed_side_by_side() -> None:
    pytest.importorskip("onnxruntime")
    settings = BenchSettings(batches=(2,), backends=("onnxruntime-cpu", "pytorch-cpu", "tensorrt"),
                             precisions=("fp32", "int8"), **FAST)
    report = run_bench(tiny, (3, 8, 8), 4, settings)
    rows = {(r.backend, r.precision): r for r in report.inference}
    fp32, int8 = rows[("onnxruntime-cpu", "fp32")], rows[("onnxruntime-cpu", "int8")]
    assert fp32.status == int8.status == "ok", (fp32.reason, int8.reason)
    assert fp32.reps == int8.reps  # round-robin: the same number of rounds for both
    assert int8.vs_fp32 == pytest.approx(fp32.p50_ms / int8.p50_ms) and fp32.vs_fp32 == pytest.approx(1.0)
    assert rows[("pytorch-cpu", "int8")].status == "skipped"
    # --int8-activations auto: each backend times the file xbuild export would make for it
    assert (int8.int8_activations, fp32.int8_activations) == ("asymmetric", None)
    assert rows[("tensorrt", "int8")].int8_activations == "symmetric"


def test_cli_precision_list_is_checked_before_any_work(run: Callable[..., Result]) -> None:
    result = run("bench", CIFAR, "--device", "cpu", "--precision", "fp32,bf16")
    assert result.exit_code == 2 and "--precision fp32,bf16: choose from fp32, fp16, int8" in result.output
