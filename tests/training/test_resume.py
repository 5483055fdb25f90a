"""Resume checkpoints: a run interrupted after epoch k and resumed ends exactly where the uninterrupted run ends.

On CPU the result is bitwise equal: the data order follows (seed, epoch), augmentation (seed, epoch,
image), dropout each rank's RNG (saved and restored), and the optimizer, schedule and step count
are restored from the resume state.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch
from launch import CIFAR, EXAMPLE
from safetensors.torch import load_file
from torch import nn

from xception_build.checkpoint import (
    capture_rng,
    load_training_state,
    restore_rng,
    restore_step,
    resume_path,
    save_training_state,
    state_of,
)
from xception_build.datasets import UInt8Images
from xception_build.distributed import DistContext
from xception_build.errors import CheckpointError
from xception_build.loaders import train_loader
from xception_build.training import EpochResult, TrainOptions, TrainStep, fit, save_checkpoint

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
# the modern recipe's shape (warm-up + cosine, label smoothing, AdamW): its schedule depends on the
# planned total, so resuming must restore the position within it, not restart it
OPTIONS = TrainOptions(optimizer="adamw", lr=3e-3, weight_decay=0.05, label_smoothing=0.1, schedule="cosine",
                       warmup_epochs=1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(8, 4))


def _loader() -> torch.utils.data.DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (48, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.randint(4, (48,), generator=gen)
    data = UInt8Images(images, labels, (3, 8, 8), NORM, train=True, seed=0)  # random flips: augmentation on
    return train_loader(data, 8, DistContext(), seed=0, workers=0)


def _fresh_step() -> TrainStep:
    step = TrainStep(_net(), "cpu", OPTIONS)
    step.plan_schedule(6, 3)  # 48 images / 8 = 6 steps per epoch, 3 epochs
    return step


class _Killed(Exception):
    """Stands for the process dying right after the checkpoint of epoch 1 was written."""


def test_a_run_interrupted_after_an_epoch_and_resumed_ends_bitwise_where_the_whole_run_ends(tmp_path: Path) -> None:
    torch.manual_seed(123)
    whole = _fresh_step()
    fit(whole, _loader(), epochs=3, progress=False)

    torch.manual_seed(123)
    first = _fresh_step()
    path = tmp_path / "run.resume.pt"

    def save_then_die(result: EpochResult) -> None:
        save_training_state(path, state_of(first, epoch=result.epoch, epochs=3, seed=0, rng=[capture_rng(first.device)],
                                           spec="net: test", config={}, history=[]))
        raise _Killed

    with pytest.raises(_Killed):
        fit(first, _loader(), epochs=3, progress=False, on_epoch_end=save_then_die)

    torch.manual_seed(999)  # a new process: another RNG state until the saved one is restored
    state = load_training_state(path)
    second = _fresh_step()
    restore_step(second, state)
    restore_rng(state["rng"][0], second.device)
    fit(second, _loader(), epochs=3, progress=False, start_epoch=state["epoch"] + 1)

    assert state["epoch"] == 1 and state["step"] == 6 and second.optimizer_steps == whole.optimizer_steps == 18
    for (name, a), b in zip(whole.module.state_dict().items(), second.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert second.optimizer.param_groups[0]["lr"] == whole.optimizer.param_groups[0]["lr"]
    # without the restored RNG, dropout draws differently and the runs part
    torch.manual_seed(999)
    third = _fresh_step()
    restore_step(third, state)
    fit(third, _loader(), epochs=3, progress=False, start_epoch=2)
    assert not torch.equal(third.module[6].weight, whole.module[6].weight)


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# dropout stays on (0.2): the resumed run must also restore the RNG it draws from
EXAMPLE_ARGS = [str(CIFAR), "--set", "middle.repeat=1", "--synthetic-size", "48", "--batch-size", "16",
                "--precise-bn", "1", "--device", "cpu", "--no-progress"]


def test_example_resume_continues_to_the_weights_of_the_uninterrupted_run(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    train = _example().main
    assert train([*EXAMPLE_ARGS, "--epochs", "3", "--out", str(tmp_path / "whole.safetensors")]) == 0
    # the paper's schedule depends on the epoch only: stopping after 1 of 3 epochs and extending is exact
    assert train([*EXAMPLE_ARGS, "--epochs", "1", "--out", str(tmp_path / "part.safetensors")]) == 0
    capsys.readouterr()
    assert train([*EXAMPLE_ARGS, "--epochs", "3", "--out", str(tmp_path / "part.safetensors"),
                  "--resume", str(tmp_path / "part.resume.pt")]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 1 (step 3)" in out and "epoch 2/3" in out and "epoch 1/3" not in out
    whole, resumed = load_file(str(tmp_path / "whole.safetensors")), load_file(str(tmp_path / "part.safetensors"))
    assert set(whole) == set(resumed)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), "resumed run differs"
    state = load_training_state(tmp_path / "part.resume.pt")
    assert state["epoch"] == 3 and state["step"] == 9 and [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert "xception_cifar" in state["spec"] and "repeat: 1" in state["spec"]  # the resolved spec, --set applied


def test_resume_refuses_another_spec_a_weights_file_and_a_damaged_state(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    train = _example().main
    out = tmp_path / "run.safetensors"
    assert train([*EXAMPLE_ARGS, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    other_spec = [a if a != "middle.repeat=1" else "middle.repeat=2" for a in EXAMPLE_ARGS]
    assert train([*other_spec, "--resume", str(resume_path(out)), "--out", str(out)]) == 2
    assert "trained with another spec" in capsys.readouterr().err
    assert train([*EXAMPLE_ARGS, "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a weights file" in err and "run.resume.pt" in err
    damaged = tmp_path / "damaged.resume.pt"
    damaged.write_bytes(resume_path(out).read_bytes()[:5000])
    assert train([*EXAMPLE_ARGS, "--resume", str(damaged)]) == 2
    assert "not a readable resume state" in capsys.readouterr().err
    assert train([*EXAMPLE_ARGS, "--resume", str(tmp_path / "missing.resume.pt")]) == 2
    assert "resume state not found" in capsys.readouterr().err


def test_resume_state_loads_only_plain_data(tmp_path: Path) -> None:
    """A file that would run code when unpickled is refused (torch.load with weights_only=True)."""

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.resume.pt"
    torch.save({"format": "xception-build training state", "model": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable resume state"):
        load_training_state(path)


def test_a_save_interrupted_midway_leaves_the_previous_checkpoint_whole(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    step = TrainStep(_net(), "cpu", OPTIONS)
    state_file, weights = tmp_path / "ckpt.resume.pt", tmp_path / "ckpt.safetensors"
    common = {"epochs": 3, "seed": 0, "rng": [capture_rng(step.device)], "spec": "x", "config": {}, "history": []}
    save_training_state(state_file, state_of(step, epoch=1, **common))
    save_checkpoint(step.module, weights, {"epoch": "1"})
    before = load_file(str(weights))
    step(*next(iter(_loader())))  # the weights change

    def killed(_fd: int) -> None:  # the data is written, not yet on disk: the moment a kill does most harm
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(state_file, state_of(step, epoch=2, **common))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(step.module, weights, {"epoch": "2"})
    monkeypatch.undo()
    assert load_training_state(state_file)["epoch"] == 1
    after = load_file(str(weights))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.resume.pt", "ckpt.safetensors"]  # no temp files


def test_a_run_cut_short_by_max_steps_writes_weights_but_no_resume_state(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A resume state saying "epoch 1 done" after 1 of its 3 steps would make --resume skip the rest."""
    out = tmp_path / "quick.safetensors"
    assert _example().main([*EXAMPLE_ARGS, "--epochs", "2", "--max-steps", "1", "--out", str(out)]) == 0
    assert "stopped by --max-steps within epoch 1" in capsys.readouterr().out
    assert out.is_file() and not resume_path(out).exists()
