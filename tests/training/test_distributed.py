"""Training past one process: torchrun + DDP on CPU (gloo), checked for equal results, not only for running.

The central check: two processes with batch B and ``--sync-bn`` take, step for step, the steps of
one process with batch 2B on the same data order. Why that must hold: ``DistributedSampler`` deals
each epoch's permutation out rank by rank, so the two ranks' i-th batches together are the
one-process run's i-th batch (:mod:`xception_build.loaders`); synchronised BatchNorm normalises
with the statistics of that whole batch; each rank's loss is the mean over its B images and DDP
averages the ranks' gradients, which is the gradient of the mean over 2B; weight decay and
momentum then act on identical gradients. Conditions: dropout and augmentation off, the dataset
a multiple of 2B (no padding, no dropped remainder), the same seed and learning rate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from launch import CIFAR, EXAMPLE, SMALL, WORKER, explain, python, torchrun

from xception_build import build_model
from xception_build.checkpoint import load_training_state
from xception_build.weights import load_weights

BATCH = 8  # per process; 64 images = 4 steps per epoch, 2 epochs


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The reference: one process, batch 2B, float64, without torchrun."""
    out = tmp_path_factory.mktemp("one")
    result = python(WORKER, out, "--batch-size", 2 * BATCH, "--double")
    assert result.returncode == 0, explain(result)
    return torch.load(out / "rank0.pt", weights_only=True)


def _two_processes(out: Path, *flags: str) -> list[dict[str, torch.Tensor]]:
    result = torchrun(2, WORKER, out, "--batch-size", BATCH, "--double", *flags)
    assert result.returncode == 0, explain(result)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_two_processes_with_sync_bn_take_the_steps_of_one_process_with_twice_the_batch(
        tmp_path: Path, one_process: dict[str, torch.Tensor]) -> None:
    ranks = _two_processes(tmp_path, "--sync-bn")
    reference = one_process["params"]
    assert ranks[0]["params"].shape == reference.shape and len(reference) == 8  # 2 epochs x 4 steps
    for i, (ours, theirs) in enumerate(zip(ranks[0]["params"], reference, strict=True)):
        # float64: agreement to rounding (measured ~1e-14); a real difference is >= 1e-6 (see below)
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-11, msg=f"step {i + 1}")
    # BN running statistics too: synchronised BN records the statistics of the global batch
    torch.testing.assert_close(ranks[0]["buffers"], one_process["buffers"], rtol=1e-9, atol=1e-11)
    # every rank holds the same parameters after every step (DDP's all-reduce gives every rank the same bits)
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert torch.equal(ranks[0]["buffers"], ranks[1]["buffers"])
    assert not torch.equal(reference[0], reference[-1])  # and training moved them


def test_without_sync_bn_the_processes_normalise_half_batches_and_drift(
        tmp_path: Path, one_process: dict[str, torch.Tensor]) -> None:
    """The control: the tolerance above is tight enough to see per-process BatchNorm statistics."""
    ranks = _two_processes(tmp_path)
    first_step = (ranks[0]["params"][0] - one_process["params"][0]).abs().max().item()
    assert first_step > 1e-6, "unsynchronised BN should already differ after one step"
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])  # DDP still keeps the ranks equal


def test_torchrun_example_trains_and_rank_0_alone_writes_one_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run" / "ckpt.safetensors"
    # 136 synthetic training images hold out 17 for validation: an odd count, not split evenly by 2 ranks.
    # --accumulate 2: DDP skips the all-reduce of every other backward (no_sync).
    result = torchrun(2, EXAMPLE, CIFAR, *SMALL, "--synthetic-size", 136, "--batch-size", BATCH, "--epochs", 1,
                      "--accumulate", 2, "--precise-bn", 2, "--device", "cpu", "--sync-bn", "--no-progress",
                      "--out", out)
    assert result.returncode == 0, explain(result)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ckpt.resume.pt", "ckpt.safetensors"]
    assert result.stdout.count("final accuracy:") == 1, "only rank 0 prints"
    assert "2 processes x batch 8 x 2 accumulated = global batch 32" in result.stdout
    assert "after 4 steps" in result.stdout  # 68 images per rank: 8 batches of 8, 4 optimizer steps
    # the accuracy counts the whole validation set, gathered from both ranks' shards (9 + 8)
    assert "top-1 on 17 validation images" in result.stdout, result.stdout
    load_weights(build_model(CIFAR, overrides=SMALL[1::2]), out)  # the weights file export reads
    state = load_training_state(out.parent / "ckpt.resume.pt")
    assert state["epoch"] == 1 and state["config"]["world_size"] == 2 and len(state["rng"]) == 2


def test_a_failing_rank_takes_the_job_down_with_its_message(tmp_path: Path) -> None:
    """A corrupt image read by one rank only: that rank reports it, and the job ends instead of hanging."""
    image = pytest.importorskip("PIL.Image", reason="Pillow reads image folders")
    for c in range(2):
        (tmp_path / "data" / str(c)).mkdir(parents=True)
        for i in range(12):
            image.new("RGB", (32, 32), (200 * c, 40 + 8 * i, 90)).save(tmp_path / "data" / str(c) / f"{i}.png")
    broken = tmp_path / "data" / "1" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    result = torchrun(2, EXAMPLE, CIFAR, *SMALL, "--data", tmp_path / "data", "--batch-size", 4, "--epochs", 1,
                      "--device", "cpu", "--no-progress", "--out", tmp_path / "ckpt.safetensors", timeout=240)
    assert result.returncode != 0, explain(result)
    lines = [line for line in result.stderr.splitlines() if "cannot read the image" in line]
    assert lines and "error (rank" in lines[0] and str(broken) in lines[0], explain(result)
    # the other rank, cut off mid-collective, says so in one line too (if torchrun has not stopped it first)
    assert not any(line.startswith("[rank") and "Traceback" in line for line in result.stderr.splitlines())
    assert not (tmp_path / "ckpt.safetensors").exists()
