"""How ``xbuild bench`` takes a figure and what it records it in.

:func:`measure` is the one timing loop every row goes through (inference and training alike):
warm-up, device synchronisation after each call, an adaptive number of repetitions. The row and
report dataclasses are what :func:`exporters.bench.run_bench` returns and the CLI formats; the
environment is recorded with them because figures taken on different machines or loads do not
compare.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TypeVar

import torch

from exporters.backends import BACKENDS, backends_for
from exporters.bench.analysis import AnalyticFigures, fraction_of_peak
from exporters.bench.peaks import DevicePeak, cpu_isa_flags, cpu_name
from exporters.contract import (
    PRECISIONS,
    BackendName,
    ComputePrecision,
    Device,
    Int8Activations,
    Int8ActivationsChoice,
    OpenVINOPrecision,
    Precision,
)
from xception_build.errors import UserError, XBuildError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class BenchSettings:
    """What to measure and how hard. Defaults keep a CPU run of the 299×299 net to a few minutes.

    ``backends`` empty means every backend of ``device`` (:func:`exporters.backends.backends_for`).
    """

    device: Device = "cpu"
    batches: tuple[int, ...] = (1, 8)
    backends: tuple[BackendName, ...] = ()
    precisions: tuple[Precision, ...] = ("fp32",)  # of the artifacts the ONNX Runtime and TensorRT rows run
    int8_activations: Int8ActivationsChoice = "auto"
    openvino_precision: OpenVINOPrecision = "auto"  # OpenVINO's inference precision hint
    warmup: int = 2
    min_reps: int = 5
    max_reps: int = 1000
    budget_s: float = 1.0  # per (backend, batch): keep repeating until this much time has passed
    train: bool = False
    train_batch: int | None = None  # default: the largest inference batch
    reference: bool = True  # timm legacy_xception rows in --train
    threads: int | None = None  # CPU threads for torch and onnxruntime; None: their defaults

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise UserError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
        if not self.backends:
            object.__setattr__(self, "backends", backends_for(self.device))
        unknown_precisions = [p for p in self.precisions if p not in PRECISIONS]
        if unknown_precisions or not self.precisions:
            raise UserError(f"--precision {','.join(self.precisions)}: choose from {', '.join(PRECISIONS)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise UserError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.min_reps < 1 or self.warmup < 0 or self.budget_s < 0:
            raise UserError("--min-reps must be >= 1, --warmup >= 0 and --budget >= 0")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: expected a positive integer")


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds per call, after warm-up and with the device synchronised after each call."""

    samples: tuple[float, ...]

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    @property
    def best(self) -> float:
        """The fastest call: least disturbed by other load on a shared machine."""
        return min(self.samples)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without needing numpy."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def measure(fn: Callable[[], object], sync: Callable[[], None], *, warmup: int, min_reps: int,
            max_reps: int, budget_s: float) -> Timing:
    """Warm up, then repeat until ``min_reps`` calls *and* ``budget_s`` seconds, or ``max_reps`` calls.

    Adaptive so fast configurations get many samples (stable percentiles) and slow ones still end;
    a call slower than 4× the budget stops after 3 samples rather than holding the run hostage.
    """
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max_reps:
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(samples) >= min_reps and elapsed >= budget_s:
            break
        if len(samples) >= 3 and elapsed >= 4 * max(budget_s, 1.0) and samples[0] > budget_s:
            break
    return Timing(tuple(samples))


K = TypeVar("K")


def measure_interleaved(calls: Mapping[K, Callable[[], object]], sync: Callable[[], None], *, warmup: int,
                        reps: int) -> dict[K, Timing]:
    """Time several calls round-robin, so that load from other processes on a shared machine falls
    on every contender alike (for ratios taken side by side in one run)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    sync()
    samples: dict[K, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - t0)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def describe_environment(env: dict[str, object]) -> str:
    """One line for a report: device, its instruction sets, threads, library versions, load."""
    flags = env.get("cpu_flags")
    isa = f" [{' '.join(flags)}]" if isinstance(flags, list) else ""  # type: ignore[arg-type]
    return (f"{env['device']} ({env['device_name']}){isa}, {env['threads']} torch threads, torch {env['torch']}, "
            f"onnxruntime {env.get('onnxruntime') or '-'}, openvino {env.get('openvino') or '-'}, "
            f"load average {env.get('load_average', '-')}")


@dataclass(kw_only=True)
class Row:
    """What every measured row has: its outcome and the timing figures (None where it did not run)."""

    status: str = "ok"  # ok | unavailable | skipped | failed
    reason: str = ""
    batch: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    reps: int = 0
    images_per_s: float | None = None  # batch / p50
    setup_s: float | None = None  # export / compile / engine build and first call
    fraction_flops: float | None = None


@dataclass(kw_only=True)
class InferenceRow(Row):
    backend: BackendName
    precision: Precision = "fp32"  # the artifact's (or model's) precision
    compute_precision: ComputePrecision | None = None  # what the backend computed at, where not the artifact's
    int8_activations: Int8Activations | None = None  # the int8 artifact's activation scheme
    fraction_bandwidth: float | None = None
    vs_fp32: float | None = None  # the fp32 row's p50 / this row's, same backend and batch, timed round-robin
    vs_baseline: float | None = None  # the run's first fp32 row's p50 / this row's, same batch, round-robin
    baseline: str = ""  # that row: "onnxruntime-cpu fp32"


@dataclass(kw_only=True)
class TrainRow(Row):
    config: str
    model: str
    peak_memory_bytes: int | None = None
    memory_kind: str = ""
    vs_reference: float | None = None  # this row's images/s ÷ the reference's, same config


@dataclass
class BenchReport:
    environment: dict[str, object]
    analytic: dict[str, object]
    peak: dict[str, object] | None
    settings: dict[str, object]
    inference: list[InferenceRow] = field(default_factory=list)
    train: list[TrainRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "analytic": self.analytic, "peak": self.peak,
                "settings": self.settings, "inference": [asdict(r) for r in self.inference],
                "train": [asdict(r) for r in self.train]}


Progress = Callable[[str], None]


def fill_row(row: Row, timing: Timing, figures: AnalyticFigures, peak: DevicePeak | None, precision: str, *,
             training: bool) -> None:
    """Put ``timing`` into ``row`` with the fraction of ``peak`` it reaches (one formula for both tables)."""
    row.p50_ms, row.p90_ms, row.min_ms = 1e3 * timing.p50, 1e3 * timing.p90, 1e3 * timing.best
    row.reps = len(timing.samples)
    row.images_per_s = row.batch / timing.p50
    fractions = fraction_of_peak(figures, row.images_per_s, peak, precision, training=training)
    row.fraction_flops = fractions["fraction_flops"]
    if isinstance(row, InferenceRow):
        row.fraction_bandwidth = fractions["fraction_bandwidth"]


def one_line(exc: BaseException, *, with_type: bool = True) -> str:
    """A reason that fits a table row: the first line, the hint appended, the exception type if asked."""
    if isinstance(exc, XBuildError):
        text = exc.message.strip().splitlines()[0] + (f" ({exc.hint})" if exc.hint else "")
    else:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else ""
    text = _ANSI.sub("", text)  # some libraries colour their messages; a table row is plain text
    return (f"{type(exc).__name__}: {text}" if with_type else text)[:400]


def environment(device: torch.device, label: str) -> dict[str, object]:
    """What the figures were measured on; load average because other work skews CPU timings."""
    env: dict[str, object] = {"label": label, "device": str(device), "torch": torch.__version__,
                              "python": platform.python_version(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = _cpu_name()
    if hasattr(os, "getloadavg"):
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
        env["cpu_flags"] = list(cpu_isa_flags())
    for module in ("onnxruntime", "openvino", "timm"):  # versions read without importing (openvino's import
        try:                                          # would start its telemetry: exporters.openvino.ir)
            env[module] = version(module)
        except PackageNotFoundError:
            env[module] = None
    return env


def _cpu_name() -> str:
    return cpu_name() or platform.processor() or "cpu"
