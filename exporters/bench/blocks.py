"""Time per spec block (``xbuild bench --blocks``): the table a user reads to decide which block to change.

For each requested backend that has a block profiler (:data:`BLOCK_PROFILERS`) and each precision,
one batch size is profiled under the runtime's own profiler (:mod:`.profiled`). Every planned
block gets a row -- its spec path, repeat, YAML file and line, as ``xbuild compile`` and
``--explain`` cite them -- with its mean time per call, its share of the measured total, the plan's
MACs, the FLOP/s it reaches and their fraction of the device's peak (:mod:`.peaks`); the head is a
row of its own. What the profiler saw but could not give to a block is the *unattributed* part:
kernels no block owns, named one by one, and the runtime's own work between kernels.

Times are means over the profiled calls, not medians: means add up (the rows, the unattributed
part and the total are means over the same calls), medians do not. The check: blocks + head +
unattributed must come within :data:`SUM_TOLERANCE` of the measured total, the calls' own
wall-clock time taken around each call as the bench takes it; what is left is outside the
profiler's view (the Python call, copying the inputs and outputs).

Adding a backend's block profiler is one function ``(ProfileJob) -> list[ProfiledCall]`` and one
entry of :data:`BLOCK_PROFILERS`; a backend without one is reported as such (:data:`NOT_PROFILED`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from exporters.backends import BACKENDS, ArtifactBackend, PytorchBackend
from exporters.bench.peaks import DevicePeak, device_peak, peak_precision
from exporters.bench.profiled import ProfiledCall, ProfileJob
from exporters.bench.timing import BenchSettings, Progress, one_line
from exporters.contract import HEAD, BackendName, Int8Activations, Precision
from xception_build.errors import BackendUnavailable, UserError

if TYPE_CHECKING:
    from xception_build.model import XceptionNet

#: The stated fraction: blocks + head + unattributed must be within 5 % of the measured total.
SUM_TOLERANCE = 0.05


@dataclass(frozen=True)
class BlockProfiler:
    """One backend family's profiler: what it runs, what its times are and what its overhead is."""

    run: Callable[[ProfileJob], list[ProfiledCall]]
    method: str  # what a row's time is
    overhead: str  # what the time inside a call but in no kernel is


def _pytorch(job: ProfileJob) -> list[ProfiledCall]:
    from exporters.bench.profile_pytorch import profile_pytorch

    return profile_pytorch(job)


def _onnxruntime(job: ProfileJob) -> list[ProfiledCall]:
    from exporters.bench.profile_onnxruntime import profile_onnxruntime

    return profile_onnxruntime(job)


def _openvino(job: ProfileJob) -> list[ProfiledCall]:
    from exporters.bench.profile_openvino import profile_openvino

    return profile_openvino(job)


_TORCH = BlockProfiler(
    _pytorch, method="torch.profiler: one record_function range per block (CPU time; device time on CUDA)",
    overhead="the forward's own Python between blocks (each call's range minus its block ranges and ops)")
#: Block profilers by backend.
BLOCK_PROFILERS: dict[BackendName, BlockProfiler] = {
    "pytorch-cpu": _TORCH,
    "pytorch-cuda": _TORCH,  # device time from kineto: not run yet (no GPU lent when it was written)
    "onnxruntime-cpu": BlockProfiler(
        _onnxruntime, method="ONNX Runtime's profiler: per-node kernel time of its optimised graph",
        overhead="ONNX Runtime's executor between kernels (each model_run span minus its nodes)"),
    "openvino-cpu": BlockProfiler(
        _openvino, method="OpenVINO's per-layer performance counters (PERF_COUNT): real time of each executed "
                          "layer of the compiled IR",
        overhead="not reported: OpenVINO has no span for the whole request, so the layers' sum is checked "
                 "against the calls' wall clock directly"),
}
_COMPILED = "torch.compile fuses kernels across block boundaries, so its kernels belong to no one block"
#: Why a backend has no block profiler.
NOT_PROFILED: dict[BackendName, str] = {
    "pytorch-compile-cpu": _COMPILED,
    "pytorch-compile-cuda": _COMPILED,
    "onnxruntime-cuda": "ONNX Runtime's per-node times on its CUDA provider are the kernels' launches, "
                        "not the GPU's work",
    "tensorrt": "TensorRT's per-layer profile names engine layers, which the block map does not cover yet",
}


@dataclass(frozen=True)
class KernelShare:
    """One kernel's mean time per call within a row (or within the unattributed part)."""

    name: str
    op_type: str
    time_ms: float
    via: str = ""  # how it was given to the row: "name", "neighbour", "range"; "" when unattributed


@dataclass(frozen=True)
class BlockTime:
    """One planned block (or the head): where the spec writes it, its cost and its measured time."""

    module: str  # e.g. "middle.blocks.3"; "head"
    spec_path: str  # e.g. "middle.blocks[0]"
    repeat: tuple[int, int]
    file: str | None
    line: int | None
    macs: int  # per image, the plan's
    time_ms: float | None  # mean per call; None: no kernel of it was seen
    fraction_of_total: float | None = None  # of the measured total
    achieved_flops: float | None = None  # 2 * MACs * batch / time
    fraction_of_peak: float | None = None
    kernels: tuple[KernelShare, ...] = ()


@dataclass(frozen=True)
class Unattributed:
    """What the profiler saw in the calls but no block owns."""

    kernels: tuple[KernelShare, ...]
    overhead_ms: float  # the runtime's own work between kernels
    overhead: str  # what that is, for this profiler

    @property
    def time_ms(self) -> float:
        return sum(k.time_ms for k in self.kernels) + self.overhead_ms


@dataclass(frozen=True)
class SumCheck:
    """Blocks + head + unattributed against the measured total."""

    blocks_ms: float  # every row, the head's included
    unattributed_ms: float
    total_ms: float  # the profiled calls' own wall-clock time, mean per call
    tolerance: float = SUM_TOLERANCE

    @property
    def sum_ms(self) -> float:
        return self.blocks_ms + self.unattributed_ms

    @property
    def fraction(self) -> float:
        """The sum as a fraction of the measured total."""
        return self.sum_ms / self.total_ms if self.total_ms > 0 else 0.0

    @property
    def within(self) -> bool:
        return abs(1.0 - self.fraction) <= self.tolerance


@dataclass
class BlockProfile:
    """One (backend, precision) at one batch size: a row per block, what was not attributed, the check."""

    backend: BackendName
    precision: Precision
    batch: int
    int8_activations: Int8Activations | None = None
    status: str = "ok"  # ok | unsupported | unavailable | skipped | failed
    reason: str = ""
    method: str = ""  # what the times are
    calls: int = 0  # profiled calls the means are over
    peak_precision: str = ""  # the precision whose peak the "% peak" column compares with
    peak_flops: float | None = None  # that peak; None: unknown
    emulated: bool = False  # the profiled precision has no instructions here: compared with the fp32 peak
    rows: list[BlockTime] = field(default_factory=list)
    unattributed: Unattributed | None = None
    check: SumCheck | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        if self.unattributed is not None:
            data["unattributed"]["time_ms"] = self.unattributed.time_ms
        if self.check is not None:
            data["check"].update(sum_ms=self.check.sum_ms, fraction=self.check.fraction, within=self.check.within)
        for row in data["rows"]:
            row["repeat"] = list(row["repeat"])
        return data


@dataclass
class BlocksReport:
    """What ``xbuild bench --blocks`` prints: where it ran, the analytic figures, the peak, the profiles."""

    environment: dict[str, object]
    analytic: dict[str, object]
    peak: dict[str, object] | None
    settings: dict[str, object]
    profiles: list[BlockProfile] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "analytic": self.analytic, "peak": self.peak,
                "settings": self.settings, "sum_tolerance": SUM_TOLERANCE,
                "blocks": [p.to_dict() for p in self.profiles]}


def profile_blocks(model: XceptionNet, settings: BenchSettings, on_task: Progress) -> list[BlockProfile]:
    """One :class:`BlockProfile` per requested (backend, precision), at the one batch of ``settings``."""
    from exporters.bench.inference import ArtifactFiles

    if len(settings.batches) != 1:
        raise UserError(f"--blocks profiles one batch size, got {', '.join(map(str, settings.batches))}",
                        hint="give --batch N")
    (batch,) = settings.batches
    input_size = model.plan.input_shape.as_tuple()
    files = ArtifactFiles(model, input_size, (batch,), settings.int8_activations)
    rows = planned_rows(model)
    inputs = np.random.default_rng(batch).standard_normal((batch, *input_size), dtype=np.float32)
    profiles = []
    try:
        for name in settings.backends:
            backend = BACKENDS[name]
            reason = backend.unavailable()
            peak = device_peak(torch.device(backend.device)) if reason is None else None
            for precision in settings.precisions:
                on_task(f"{name} {precision} batch {batch} per block")
                scheme = files.scheme(tensorrt=backend.runs == "tensorrt-plan", openvino=backend.runs == "openvino-ir"
                                      ) if precision == "int8" and isinstance(backend, ArtifactBackend) else None
                profile = BlockProfile(name, precision, batch, scheme)
                profiler = BLOCK_PROFILERS.get(name)
                if profiler is None:
                    profile.status = "unsupported"
                    profile.reason = f"no per-block profile for {name}: " + NOT_PROFILED.get(
                        name, "no block profiler is registered for it")
                elif reason is not None:
                    profile.status, profile.reason = "unavailable", reason
                elif isinstance(backend, PytorchBackend) and precision != "fp32":
                    profile.status, profile.reason = "skipped", "PyTorch backends run the fp32 model"
                else:
                    profile.method = profiler.method
                    _run(profile, profiler, ProfileJob(backend, model, files, precision, inputs, settings), rows,
                         peak, precision if precision != "fp32" else peak_precision(backend.device))
                profiles.append(profile)
    finally:
        files.close()
    return profiles


def planned_rows(model: XceptionNet) -> list[BlockTime]:
    """A row per planned block in forward order, then the head's, placed in the spec; no time yet."""
    plan, spec = model.plan, model.spec
    head = spec.source.location_of((HEAD,)) if spec is not None and spec.source is not None else None
    return [*(BlockTime(b.module_name, b.spec_path, b.repeat, b.file, b.line, b.macs, None) for b in plan.blocks),
            BlockTime(HEAD, HEAD, (1, 1), head.file if head else None, head.line if head else None,
                      plan.head.macs, None)]


def _run(profile: BlockProfile, profiler: BlockProfiler, job: ProfileJob, rows: list[BlockTime],
         peak: DevicePeak | None, compared_with: str) -> None:
    try:
        calls = profiler.run(job)
    except BackendUnavailable as exc:
        profile.status, profile.reason = "unavailable", one_line(exc, with_type=False)
        return
    except Exception as exc:  # a broken backend is a row, not the end of the run
        profile.status, profile.reason = "failed", one_line(exc)
        return
    _summarise(profile, calls, rows, peak, compared_with, profiler.overhead)


#: (kernel, op type, how it was attributed) -> seconds over all calls
_Seconds = dict[tuple[str, str, str], float]


def _shares(seconds: _Seconds, calls: int) -> tuple[KernelShare, ...]:
    shares = [KernelShare(name, op, 1e3 * total / calls, via) for (name, op, via), total in seconds.items()]
    return tuple(sorted(shares, key=lambda k: -k.time_ms))


def _summarise(profile: BlockProfile, calls: list[ProfiledCall], rows: list[BlockTime],
               peak: DevicePeak | None, compared_with: str, overhead: str) -> None:
    """Means over ``calls`` per row (the plan's blocks and head, in forward order) and unattributed."""
    count = len(calls)
    owned: dict[str, _Seconds] = collections.defaultdict(lambda: collections.defaultdict(float))
    loose: _Seconds = collections.defaultdict(float)
    for call in calls:
        for kernel in call.kernels:
            key = (kernel.name, kernel.op_type, kernel.via)
            if kernel.owner is None:
                loose[(kernel.name, kernel.op_type, "")] += kernel.seconds
            else:
                owned[kernel.owner][key] += kernel.seconds
    known = {r.module for r in rows}
    for owner in [o for o in owned if o not in known]:  # a profiler's owner the plan lacks: never dropped
        for (name, op, _via), seconds in owned.pop(owner).items():
            loose[(name, op, "")] += seconds
    total_ms = 1e3 * sum(c.wall_s for c in calls) / count
    peak_flops = peak.flops_for(compared_with) if peak is not None else None
    emulated = peak is not None and compared_with in peak.emulated
    for row in rows:
        kernels = _shares(owned.get(row.module, {}), count)
        time_ms = sum(k.time_ms for k in kernels) if kernels else None
        achieved = 2 * row.macs * profile.batch / (time_ms * 1e-3) if time_ms else None
        profile.rows.append(dataclasses.replace(
            row, time_ms=time_ms, fraction_of_total=None if time_ms is None else time_ms / total_ms,
            achieved_flops=achieved, fraction_of_peak=achieved / peak_flops if achieved and peak_flops else None,
            kernels=kernels))
    profile.unattributed = Unattributed(_shares(loose, count), 1e3 * sum(c.overhead_s for c in calls) / count,
                                        overhead)
    blocks_ms = sum(r.time_ms for r in profile.rows if r.time_ms is not None)
    profile.check = SumCheck(blocks_ms, profile.unattributed.time_ms, total_ms)
    profile.calls, profile.peak_flops, profile.emulated = count, peak_flops, emulated
    profile.peak_precision = "fp32" if emulated else compared_with
