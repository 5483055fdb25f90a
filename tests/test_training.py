"""The training step and loop (xception_build.training) and examples/train.py, all on CPU.

The GPU levers (bf16/fp16 autocast, channels_last, torch.compile, CUDA synchronisation) run
here on CPU where torch allows it, so their code paths are exercised without a GPU.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from xception_build import build_model
from xception_build.datasets import synthetic_dataset
from xception_build.errors import BackendUnavailable, UserError
from xception_build.training import TrainOptions, TrainStep, fit, resolve_device, synchronize, unwrap
from xception_build.weights import load_weights

# Not from conftest: tests/exporters/ has its own conftest module of the same name.
ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
CIFAR = SPECS / "xception_cifar.yaml"


def tiny() -> nn.Module:
    """A few-layer separable-conv net: fast enough to compile in a test."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.Conv2d(8, 16, 1, bias=False),
                         nn.BatchNorm2d(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def batch(n: int = 4, size: int = 8, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(classes, (n,), generator=gen)


def test_the_cifar_variant_learns_a_synthetic_task() -> None:
    """The issue's check: a few steps of the 32x32 spec on CPU, and the loss falls."""
    torch.manual_seed(0)
    model = build_model(CIFAR, seed=0)
    data = synthetic_dataset(192, (3, 32, 32), 10, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    losses: list[float] = []
    fit(TrainStep(model, "cpu", TrainOptions()), loader, epochs=1, progress=False, losses=losses)
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.6 * first, f"loss did not fall: first {first:.3f}, last {last:.3f}: {losses}"


def test_a_step_changes_the_weights_and_returns_a_detached_loss() -> None:
    step = TrainStep(tiny(), "cpu")
    before = [p.detach().clone() for p in step.module.parameters()]
    loss = step(*batch())
    assert loss.ndim == 0 and not loss.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before, step.module.parameters(), strict=True))


def test_bf16_autocast_runs_convolutions_in_bf16_and_keeps_fp32_weights() -> None:
    step = TrainStep(tiny(), "cpu", TrainOptions(amp="bf16"))
    dtypes: list[torch.dtype] = []
    step.module[0].register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    loss = step(*batch())
    assert dtypes == [torch.bfloat16]
    assert loss.dtype == torch.float32 and math.isfinite(float(loss))
    assert all(p.dtype == torch.float32 for p in step.module.parameters())
    assert not step.scaler.is_enabled()  # bf16 has fp32's range: no loss scaling


def test_fp16_autocast_uses_a_grad_scaler() -> None:
    step = TrainStep(tiny(), "cpu", TrainOptions(amp="fp16"))
    assert step.scaler.is_enabled()
    assert math.isfinite(float(step(*batch())))


def test_channels_last_converts_weights_and_inputs_and_matches_nchw() -> None:
    torch.manual_seed(0)
    plain = TrainStep(tiny(), "cpu")
    torch.manual_seed(0)
    nhwc = TrainStep(tiny(), "cpu", TrainOptions(channels_last=True))
    conv = nhwc.module[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nhwc.to_input(batch()[0]).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc(*batch()), plain(*batch()), rtol=1e-4, atol=1e-5)


def test_compiled_step_trains_and_saves_the_plain_module(tmp_path: Path) -> None:
    torch._dynamo.reset()
    step = TrainStep(tiny(), "cpu", TrainOptions(amp="bf16", channels_last=True, compile=True))
    assert step.model is not step.module and unwrap(step.model) is step.module
    assert math.isfinite(float(step(*batch())))
    path = step.save(tmp_path / "ckpt.safetensors")
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert set(saved) == set(step.module.state_dict())  # no "_orig_mod." prefix
    assert all(t.is_contiguous() for t in saved.values())
    torch._dynamo.reset()


def test_synchronize_waits_for_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    synchronize(torch.device("cpu"))
    assert calls == []
    synchronize(torch.device("cuda", 0))
    assert calls == [torch.device("cuda", 0)]


def test_options_and_devices_are_checked() -> None:
    with pytest.raises(UserError, match="bf16, fp16, none"):
        TrainOptions(amp="fp8")
    with pytest.raises(UserError, match="sgd, adamw"):
        TrainOptions(optimizer="lamb")
    with pytest.raises(UserError, match="choose cpu or cuda"):
        resolve_device("tpu")
    assert TrainOptions(amp="bf16", channels_last=True, compile=True).describe() == "bf16+channels_last+compile"
    assert TrainOptions().describe() == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        resolve_device("cuda")


def test_precise_bn_replaces_stale_running_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    step = TrainStep(model, "cpu")
    batches = [(torch.randn(8, 3, 4, 4) * 3 + 2, torch.zeros(8, dtype=torch.long)) for _ in range(4)]
    assert step.precise_bn(batches, num_batches=3) == 3
    with torch.no_grad():
        means = [model[0](x).mean((0, 2, 3)) for x, _ in batches[:3]]
    torch.testing.assert_close(model[1].running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.1  # restored


def test_fit_stops_after_max_steps_and_evaluates() -> None:
    data = synthetic_dataset(64, (3, 8, 8), 4, seed=1)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    losses: list[float] = []
    results = fit(TrainStep(tiny(), "cpu"), loader, epochs=3, val_batches=loader, max_steps=5,
                  progress=False, losses=losses, precise_bn_batches=2)
    assert len(losses) == 5 and sum(r.steps for r in results) == 5
    assert results[-1].val_accuracy is not None and 0 <= results[-1].val_accuracy <= 1


# ------------------------------------------------------------------------------------------ example

def _example() -> object:
    spec = importlib.util.spec_from_file_location("train_example", ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_example_trains_and_writes_a_checkpoint_export_accepts(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from exporters.cli import export_command

    ckpt = tmp_path / "run" / "cifar.safetensors"
    code = _example().main([str(CIFAR), "--synthetic-size", "32", "--batch-size", "16", "--epochs", "1",  # type: ignore[attr-defined]
                            "--precise-bn", "1", "--no-progress", "--out", str(ckpt)])
    out = capsys.readouterr().out
    assert code == 0 and "final accuracy:" in out and ckpt.is_file()
    load_weights(build_model(CIFAR), ckpt)  # loads whole, or raises CheckpointError
    result = CliRunner().invoke(export_command, [str(CIFAR), "--weights", str(ckpt), "--out",
                                                 str(tmp_path / "export")])
    assert result.exit_code == 0, result.output


def test_example_reports_user_errors_with_exit_code_2(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"")
    code = _example().main([str(SPECS / "xception.yaml"), "--data", str(tmp_path), "--no-progress"])  # type: ignore[attr-defined]
    assert code == 2 and "head.num_classes=10" in capsys.readouterr().err
