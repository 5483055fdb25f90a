"""Data loaders for training and evaluation, in one process or in each rank of a torchrun job.

Training: PyTorch's ``DistributedSampler`` in every case, a one-process run being rank 0 of 1.
It shuffles the whole dataset with ``seed + epoch`` and deals the permutation out rank by rank
(rank r takes positions r, r+N, r+2N, ...). So batch i of rank r holds the permutation's
positions N·B·i + r + N·j (j < B), and the union over ranks of their batch i is exactly batch i
of a one-process run with batch N·B on the same seed: the data order on which N processes and
one process train identically.

Evaluation: each rank reads a disjoint strided shard (:class:`ShardSampler`) without the padding
``DistributedSampler`` adds, so the counts summed over ranks cover every validation image once.

Workers: by default no more data-loader processes than the CPU cores this process may run on
(``os.sched_getaffinity``), shared among the ranks of the node, and the same number in every rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from xception_build.distributed import DistContext, all_reduce
from xception_build.errors import UserError

#: more workers than this rarely speeds up decoding for one device, and each costs memory
MAX_DEFAULT_WORKERS = 8


def available_cpus() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (Linux), else all."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers(ctx: DistContext, *, decodes_files: bool) -> int:
    """Data-loader workers for each rank: the node's cores shared among its ranks, the same on every rank.

    In-memory tensors (CIFAR, synthetic) are cheaper to index in the main process than to pass
    between processes: 0. Image files are decoded per item: ``cores // local ranks`` (at most
    :data:`MAX_DEFAULT_WORKERS`), so no node runs more loader processes than it has cores and
    PyTorch's "more workers than CPUs" warning stays silent. Ranks on nodes of different sizes
    agree on the smallest value, so every rank reads at the same pace.
    """
    if not decodes_files:
        return 0
    mine = min(MAX_DEFAULT_WORKERS, available_cpus() // max(1, ctx.local_world_size))
    return int(all_reduce([mine], ctx, op="min")[0])


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(length)``: disjoint shards covering everything once."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def train_loader(dataset: Dataset[Any], batch_size: int, ctx: DistContext, *, seed: int, workers: int,
                 pin_memory: bool = False) -> DataLoader[Any]:
    """Shuffled batches of ``batch_size`` (per rank) from this rank's share of ``dataset``.

    ``DistributedSampler`` pads the dataset to a multiple of the ranks so that every rank takes
    the same number of steps (DDP needs every rank in every all-reduce); an incomplete last batch
    is dropped when there is a full one, for the same reason.
    """
    _check_batch(batch_size, workers)
    if not isinstance(dataset, Sized) or len(dataset) == 0:
        raise UserError("the training set is empty")
    sampler: DistributedSampler[Any] = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                                          shuffle=True, seed=seed)
    per_rank = len(sampler)
    # A generator of its own: creating an iterator draws a seed from it, not from the global RNG
    # that dropout uses (which resume checkpoints restore).
    generator = torch.Generator().manual_seed(seed + ctx.rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=per_rank > batch_size,
                      num_workers=workers, pin_memory=pin_memory, generator=generator)


def eval_loader(dataset: Dataset[Any], batch_size: int, ctx: DistContext, *, workers: int,
                pin_memory: bool = False) -> DataLoader[Any]:
    """This rank's shard of ``dataset`` in order, every image once over all ranks (no padding)."""
    _check_batch(batch_size, workers)
    length = len(dataset) if isinstance(dataset, Sized) else 0
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(length, ctx.rank, ctx.world_size),
                      num_workers=workers, pin_memory=pin_memory)


def _check_batch(batch_size: int, workers: int) -> None:
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1 (images per process)")
    if workers < 0:
        raise UserError(f"--workers {workers}: must be 0 (load in the training process) or more")
