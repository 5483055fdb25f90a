"""Joining a ``torchrun`` job, and the few collectives training needs beyond DDP's own.

The launcher is PyTorch's: ``torchrun`` (on one node or many, through its rendezvous flags; SLURM
and Kubernetes launchers call it too) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. A
process started without those variables is a one-process run and never touches
``torch.distributed``. The backend follows the device: NCCL for GPUs, gloo for CPUs.

Every collective here is called by every rank in the same order; they run at epoch boundaries
(loss, accuracy, BN statistics, RNG states), never per step, where DDP does its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from xception_build.errors import BackendUnavailable, UserError

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: a one-process run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # None: no process group (a one-process run)

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints progress and writes checkpoints, as in PyTorch's reference scripts."""
        return self.rank == 0

    def tag(self) -> str:
        """`` (rank 1 of 2)`` in a job, empty in a one-process run: prefixes a rank's own messages."""
        return f" (rank {self.rank} of {self.world_size})" if self.world_size > 1 else ""


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether torchrun (or a launcher that sets the same variables) started this process."""
    env = os.environ if environ is None else environ
    return "WORLD_SIZE" in env or "RANK" in env


def context_from_environment(environ: Mapping[str, str] | None = None) -> DistContext:
    """The ranks torchrun assigned (no process group joined yet), or rank 0 of 1 when not launched by it."""
    env = os.environ if environ is None else environ
    if not launched_by_torchrun(env):
        return DistContext()
    # torchrun sets all four; other launchers may set only RANK and WORLD_SIZE (then: one node).
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": env.get("RANK", "0"),
                "LOCAL_WORLD_SIZE": env.get("WORLD_SIZE", "1")}
    values: dict[str, int] = {}
    for name in _ENV:
        raw = env.get(name, defaults[name])
        try:
            values[name] = int(raw)
        except ValueError:
            raise UserError(f"environment variable {name}={raw!r} is not an integer",
                            hint="start distributed runs with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK"
                                 " and LOCAL_WORLD_SIZE") from None
    rank, world, local_rank, local_world = (values[n] for n in _ENV)
    if not (0 <= rank < world and 0 <= local_rank < local_world):
        raise UserError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} "
                        f"LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_world}")
    return DistContext(rank, world, local_rank, local_world)


def init_distributed(device: torch.device, *, timeout: timedelta = timedelta(minutes=10),
                     environ: Mapping[str, str] | None = None) -> tuple[DistContext, torch.device]:
    """Join the torchrun job (if launched by one) and return the context and this rank's device.

    Under torchrun each process owns ``cuda:LOCAL_RANK``; ``--device cuda`` means that device.
    ``timeout`` bounds every collective: a rank that stalls (rather than exits) fails the job
    after it instead of hanging the others forever.
    """
    ctx = context_from_environment(environ)
    if not launched_by_torchrun(environ):
        return ctx, device
    if device.type == "cuda":
        if device.index is not None and ctx.local_world_size > 1 and device.index != ctx.local_rank:
            raise UserError(f"--device {device}: under torchrun every process uses cuda:LOCAL_RANK "
                            f"(this one cuda:{ctx.local_rank})", hint="pass --device cuda")
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {ctx.local_world_size} processes on this node, but only "
                            f"{torch.cuda.device_count()} CUDA devices are visible",
                            hint="set --nproc-per-node to the number of GPUs")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available():
        raise BackendUnavailable(f"torch {torch.__version__} was built without torch.distributed",
                                 hint="run without torchrun, or install a torch build with distributed support")
    try:
        dist.init_process_group(backend, timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendUnavailable(f"cannot join the torchrun job with {backend}: {reason}",
                                 hint="check torchrun's --nnodes/--rdzv-endpoint flags and that every node "
                                      "reaches MASTER_ADDR") from exc
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size, backend), device


def shutdown() -> None:
    """Leave the process group (safe to call when none was joined).

    Called on success and failure alike: a rank that fails destroys its group and exits, which
    closes its connections, so peers waiting in a collective fail at once (gloo) or at the
    timeout (NCCL), and torchrun, seeing one worker exit with an error, stops the others.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device_for(ctx: DistContext) -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce(values: Sequence[float], ctx: DistContext, op: str = "sum") -> list[float]:
    """Element-wise sum / min / max of ``values`` over all ranks (the values themselves when alone)."""
    if not ctx.distributed or ctx.world_size == 1:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=_device_for(ctx))
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return [float(v) for v in tensor.tolist()]


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when alone)."""
    if not ctx.distributed or ctx.world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


@torch.no_grad()
def average_batchnorm_statistics(module: nn.Module, ctx: DistContext) -> None:
    """Make every rank's BN running statistics the average over ranks (as timm's ``distribute_bn``).

    Without SyncBatchNorm each rank's running mean and variance follow its own shard, and only
    rank 0's reach the checkpoint; evaluation would use different statistics on each rank. With
    SyncBatchNorm they are equal already and averaging leaves them so. Integer counters are
    taken from rank 0.
    """
    if not ctx.distributed or ctx.world_size == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(ctx.world_size)
        else:
            dist.broadcast(buffer, src=0)


def current_context() -> DistContext:
    """The context of the process group this process has joined (rank 0 of 1 when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    env = context_from_environment() if launched_by_torchrun() else DistContext()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank, local_world = ((env.local_rank, env.local_world_size) if env.world_size == world
                               else (rank, world))
    return DistContext(rank, world, local_rank, local_world, str(dist.get_backend()))


_LINK_FAILURES = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out", "timeout",
                  "nccl", "gloo", "processgroup", "heartbeat")


def lost_peer_reason(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` is a collective that failed because another rank left or stalled.

    Gloo reports a peer that exited as a plain ``RuntimeError`` ("Connection closed by peer"),
    not as ``torch.distributed.DistError``; both are recognised. None for anything else, which is
    a bug and keeps its traceback.
    """
    text = str(exc).strip()
    if not isinstance(exc, dist.DistError) and not (
            isinstance(exc, RuntimeError) and any(marker in text.lower() for marker in _LINK_FAILURES)):
        return None
    first = (text.splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo prefixes "[/path/to/pair.cc:553] "
