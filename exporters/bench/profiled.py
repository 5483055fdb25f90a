"""What a block profiler measures (``xbuild bench --blocks``): the kernels of each profiled call.

A block profiler (one per backend family: :mod:`.profile_onnxruntime`, :mod:`.profile_pytorch`)
runs one artifact or model at one batch size under its runtime's own profiler and returns one
:class:`ProfiledCall` per timed call: the call's wall-clock time, measured around it as the bench
measures any call, and every kernel the profiler saw inside it, each given to a planned block, to
the head, or to none. :mod:`.blocks` turns those into the per-block table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporters.backends import Backend
from exporters.bench.timing import BenchSettings
from exporters.contract import HEAD, Precision
from xception_build.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import onnx

    from exporters.bench.inference import ArtifactFiles
    from xception_build.model import XceptionNet
    from xception_build.plan import Plan

#: Profiled calls per row at most: every call adds each of its kernels to the profiler's trace
#: (ONNX Runtime writes about 1 kB of JSON per node and call).
MAX_PROFILED_CALLS = 50


@dataclass(frozen=True)
class KernelTime:
    """One kernel (an ONNX Runtime node, a PyTorch op or block range) in one profiled call."""

    name: str  # as the runtime names it (an ONNX Runtime node of its optimised graph, a torch op)
    op_type: str
    seconds: float
    owner: str | None  # a planned block's module name, "head", or None: not attributed
    via: str = ""  # how it was attributed: "name", "neighbour" (exporters.onnx.blocks.attribute), "range"


@dataclass(frozen=True)
class ProfiledCall:
    """One timed call under the profiler."""

    wall_s: float  # the call's wall-clock time, around it, with the device synchronised
    kernels: tuple[KernelTime, ...]
    overhead_s: float  # seen by the profiler inside the call but in no kernel (the runtime's own work)


@dataclass(frozen=True)
class ProfileJob:
    """What a block profiler runs: ``precision`` of ``model`` (or its artifact in ``files``) at ``batch``."""

    backend: Backend
    model: XceptionNet
    files: ArtifactFiles
    precision: Precision
    inputs: np.ndarray  # (batch, C, H, W) float32
    settings: BenchSettings  # threads, warm-up, --min-reps and --budget of the profiled calls

    @property
    def batch(self) -> int:
        return int(self.inputs.shape[0])


def warm_up(call: Callable[[], object], sync: Callable[[], None], settings: BenchSettings) -> None:
    """The first call (session start, allocation) and ``--warmup`` more, none of them reported."""
    for _ in range(1 + settings.warmup):
        call()
    sync()


def timed_calls(call: Callable[[], object], sync: Callable[[], None], settings: BenchSettings) -> list[float]:
    """Seconds per call: at least ``--min-reps`` calls and ``--budget`` seconds, at most
    :data:`MAX_PROFILED_CALLS`; the device synchronised after each, as :func:`timing.measure` does."""
    walls: list[float] = []
    start = time.perf_counter()
    while len(walls) < min(settings.max_reps, MAX_PROFILED_CALLS):
        t0 = time.perf_counter()
        call()
        sync()
        walls.append(time.perf_counter() - t0)
        if len(walls) >= settings.min_reps and time.perf_counter() - start >= settings.budget_s:
            break
    return walls


def tagged_file(path: Path, plan: Plan) -> tuple[list[str], onnx.ModelProto]:
    """The owners (every planned block's module name, then ``head``) and the block-tagged copy
    (:func:`exporters.onnx.blocks.tagged_copy`) of the ONNX file at ``path``, which a block profiler
    runs so that the runtime's fused and renamed kernels still say whose they are."""
    from exporters.onnx.blocks import node_owners, read_blocks, tagged_copy
    from exporters.onnx.export import load_onnx

    proto = load_onnx(path)
    order = {b.module_name: i for i, b in enumerate(plan.blocks)}
    blocks = sorted((b for b in read_blocks(proto) if b.module in order), key=lambda b: order[b.module])
    if not blocks:
        raise UserError(f"{path}: has no block map for spec '{plan.name}' (the 'xbuild.blocks' metadata an "
                        "xbuild export records), so its kernels cannot be given to blocks")
    owners = [*order, HEAD]
    return owners, tagged_copy(proto, node_owners(proto, blocks, plan.blocks[-1].module_name), owners)
