"""Loaders for one process or many: the data order that makes N x B equal 1 x NB, evaluation shards,
augmentation independent of workers and ranks, and worker defaults that fit the machine."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import pytest
import torch
from launch import CIFAR, EXAMPLE

from xception_build.datasets import DataError, ImageFolder, UInt8Images
from xception_build.distributed import DistContext, context_from_environment
from xception_build.errors import UserError
from xception_build.loaders import default_workers, eval_loader, train_loader
from xception_build.training import set_epoch

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _indexed(n: int) -> torch.utils.data.TensorDataset:
    """Images whose first pixel is their index, so batches can be read back as index lists."""
    return torch.utils.data.TensorDataset(torch.arange(n).float().view(n, 1, 1, 1), torch.zeros(n, dtype=torch.long))


def _indices(loader: torch.utils.data.DataLoader[object], epoch: int) -> list[list[int]]:
    set_epoch(loader, epoch)
    return [x.flatten().long().tolist() for x, _ in loader]


def test_two_ranks_batches_together_are_the_one_process_batches_of_twice_the_size() -> None:
    data = _indexed(48)
    one = train_loader(data, 8, DistContext(), seed=3, workers=0)
    ranks = [train_loader(data, 4, DistContext(rank=r, world_size=2), seed=3, workers=0) for r in (0, 1)]
    for epoch in (0, 1):
        whole = _indices(one, epoch)
        split = [_indices(loader, epoch) for loader in ranks]
        assert len(whole) == len(split[0]) == len(split[1]) == 6
        for i, batch in enumerate(whole):
            assert sorted(split[0][i] + split[1][i]) == sorted(batch), f"epoch {epoch} batch {i}"
        assert sorted(sum(whole, [])) == list(range(48))  # every image once per epoch
    assert _indices(one, 0) != _indices(one, 1), "reshuffled every epoch"
    assert _indices(one, 1) == _indices(one, 1), "the same order for the same epoch (resume)"


def test_evaluation_shards_cover_every_image_exactly_once() -> None:
    data = _indexed(17)
    seen = [sum(_indices(eval_loader(data, 4, DistContext(rank=r, world_size=3), workers=0), 0), [])
            for r in range(3)]
    assert sorted(sum(seen, [])) == list(range(17)) and [len(s) for s in seen] == [6, 6, 5]


def test_augmentation_depends_on_seed_epoch_and_image_not_on_workers() -> None:
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = UInt8Images(images, torch.zeros(16, dtype=torch.long), (3, 8, 8), NORM, train=True, seed=5)

    def epoch_batches(workers: int, epoch: int) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=workers)
        set_epoch(loader, epoch)
        return torch.cat([x for x, _ in loader])

    assert torch.equal(epoch_batches(0, 2), epoch_batches(2, 2))
    assert not torch.equal(epoch_batches(0, 2), epoch_batches(0, 3))  # another epoch, other flips


def test_an_unreadable_image_is_one_line_even_from_a_worker_process(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow reads image folders")
    (tmp_path / "a").mkdir()
    image.new("RGB", (8, 8)).save(tmp_path / "a" / "good.png")
    (tmp_path / "a" / "zz.png").write_bytes(b"not a png")
    data = ImageFolder(tmp_path, (3, 8, 8), NORM)
    with pytest.raises(DataError) as info:
        list(torch.utils.data.DataLoader(data, batch_size=2, num_workers=1))
    assert info.value.message == f"{tmp_path / 'a' / 'zz.png'}: cannot read the image " \
                                 f"(cannot identify image file '{tmp_path / 'a' / 'zz.png'}')"
    assert "remove or replace" in (info.value.hint or "")


@pytest.mark.parametrize(("cores", "local_ranks", "expected"), [(2, 1, 2), (2, 2, 1), (2, 3, 0), (64, 1, 8),
                                                                 (64, 8, 8), (16, 8, 2)])
def test_default_workers_share_the_cores_among_the_ranks_of_a_node(monkeypatch: pytest.MonkeyPatch, cores: int,
                                                                   local_ranks: int, expected: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    ctx = DistContext(rank=0, world_size=local_ranks, local_rank=0, local_world_size=local_ranks)
    assert default_workers(ctx, decodes_files=True) == expected
    assert default_workers(ctx, decodes_files=False) == 0  # in-memory tensors: no worker processes


def test_an_image_folder_run_picks_workers_without_pytorch_s_too_many_workers_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow reads image folders")
    for c in range(2):
        (tmp_path / "data" / str(c)).mkdir(parents=True)
        for i in range(10):
            image.new("RGB", (32, 32), (120 * c, 10 * i, 50)).save(tmp_path / "data" / str(c) / f"{i}.png")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)  # a one-core container
    spec = importlib.util.spec_from_file_location("train_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = module.main([str(CIFAR), "--set", "middle.repeat=1", "--data", str(tmp_path / "data"), "--epochs", "1",
                            "--batch-size", "6", "--precise-bn", "0", "--device", "cpu", "--no-progress",
                            "--out", str(tmp_path / "ckpt.safetensors")])
    assert code == 0, capsys.readouterr().err
    assert "1 loader worker per process" in capsys.readouterr().out  # was 4 on any machine
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]


def test_torchrun_environment_is_read_and_checked() -> None:
    assert context_from_environment({}) == DistContext()
    ctx = context_from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size) == (3, 4, 1, 2)
    assert ctx.tag() == " (rank 3 of 4)" and not ctx.is_main and not ctx.distributed
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        context_from_environment({"RANK": "0", "WORLD_SIZE": "two"})
    with pytest.raises(UserError, match="inconsistent torchrun environment"):
        context_from_environment({"RANK": "4", "WORLD_SIZE": "4"})
