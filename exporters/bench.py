"""Inference and training benchmarks, every backend measured side by side in one run.

Why in one run: figures taken on different days, machines or loads do not compare. One process
times torch eager, ``torch.compile``, ONNX Runtime and TensorRT on the same inputs, with warm-up,
device synchronisation and an adaptive number of repetitions; a backend this machine lacks becomes
a row saying why, never a silent gap. ``--train`` times the training step of
:mod:`xception_build.training` under each GPU lever and, where timm is importable, the same step on
timm's ``legacy_xception`` (the reference the compiled model must keep up with).

Each backend is a small class with ``runner(batch) -> callable``; the CLI (``exporters.bench_cli``)
only formats what :func:`run_bench` returns.
"""

from __future__ import annotations

import copy
import gc
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from xception_build.analysis import AnalyticFigures, analyse, device_peak, fraction_of_peak, precision_of
from xception_build.errors import BackendUnavailable, UserError, XBuildError
from xception_build.training import TrainOptions, TrainStep, resolve_device, synchronize

BACKENDS = ("torch", "compile", "onnxruntime", "tensorrt")
#: what makes a backend "unavailable" (a row with the reason) rather than "failed"
Unavailable = (BackendUnavailable, ImportError)


class _TorchBackend:
    """Eager PyTorch, or ``torch.compile`` of it: fp32 weights, inference mode."""

    def __init__(self, model: nn.Module, device: torch.device, input_size: tuple[int, int, int],
                 compile: bool) -> None:
        self.device, self.input_size = device, input_size
        self.model = model.to(device).eval()
        self.run_model = torch.compile(self.model) if compile else self.model

    def runner(self, batch: int) -> Callable[[], object]:
        x = torch.randn(batch, *self.input_size, device=self.device)

        def run() -> object:
            with torch.inference_mode():
                return self.run_model(x)
        return run

    def close(self) -> None:
        if self.run_model is not self.model:
            torch._dynamo.reset()


class _OnnxRuntimeBackend:
    """One ONNX export (dynamic batch) run by :class:`exporters.runners.OnnxRuntimeRunner`."""

    def __init__(self, model: nn.Module, device: torch.device, input_size: tuple[int, int, int],
                 batches: Sequence[int], threads: int | None = None) -> None:
        from exporters.runners import INPUT_NAME, BatchProfile, OnnxRuntimeRunner, onnxruntime_unavailable

        reason = onnxruntime_unavailable(device.type)
        if reason is not None:
            raise BackendUnavailable(reason)
        self.input_size, self.input_name = input_size, INPUT_NAME
        self._dir = tempfile.TemporaryDirectory(prefix="xbuild-bench-")
        path = os.path.join(self._dir.name, "model.onnx")
        profile = BatchProfile(min(batches), max(batches), max(2, *batches))
        export_for_bench(model, input_size, profile, path)
        self.session = OnnxRuntimeRunner(path, device=device.type, profile=profile, threads=threads or 0)

    def runner(self, batch: int) -> Callable[[], object]:
        feeds = {self.input_name: torch.randn(batch, *self.input_size).numpy()}
        return lambda: self.session.infer(feeds)  # copies outputs to host: synchronous on CUDA too

    def close(self) -> None:
        self._dir.cleanup()


def export_for_bench(model: nn.Module, input_size: tuple[int, int, int], profile: object, path: str) -> None:
    """Write the ONNX file the onnxruntime and TensorRT rows run: ``xbuild export``'s own exporter."""
    from exporters.onnx_export import export_onnx, serialize

    cpu_copy = copy.deepcopy(model).to("cpu").eval()  # the exporter traces on CPU; leave ``model`` be
    proto = export_onnx(cpu_copy, input_size, profile=profile)  # type: ignore[arg-type]
    with open(path, "wb") as fh:
        fh.write(serialize(proto))


class _TensorRTBackend:
    """fp32 engines (TF32 off) built by :mod:`exporters.tensorrt_backend` from the same ONNX export.

    One static engine per batch size: an engine tuned for a wide batch profile can be several
    times slower at small batches (TensorRT issue 976), and users deploy per-batch engines for
    latency. Engine builds count as setup; a timing cache shared by the builds shortens the later
    ones. Like the onnxruntime rows, each call copies the input to the GPU and the logits back.
    """

    def __init__(self, model: nn.Module, device: torch.device, input_size: tuple[int, int, int],
                 batches: Sequence[int]) -> None:
        from exporters import tensorrt_backend
        from exporters.runners import INPUT_NAME, BatchProfile

        tensorrt_backend.require_tensorrt()
        if device.type != "cuda":
            raise BackendUnavailable("TensorRT runs on CUDA only: use --device cuda")
        self.trt, self.input_size, self.input_name = tensorrt_backend, input_size, INPUT_NAME
        self._dir = tempfile.TemporaryDirectory(prefix="xbuild-bench-")
        self.onnx_path = Path(self._dir.name) / "model.onnx"
        export_for_bench(model, input_size, BatchProfile(1, max(batches), max(2, *batches)), str(self.onnx_path))

    def runner(self, batch: int) -> Callable[[], object]:
        from exporters.runners import BatchProfile

        plan = Path(self._dir.name) / f"model.b{batch}.plan"
        settings = self.trt.BuildSettings(BatchProfile(batch, batch, batch), self.input_size)
        self.trt.build_engine(self.onnx_path, plan, settings, timing_cache=Path(self._dir.name) / "timing.cache")
        session = self.trt.TensorRTRunner(plan)
        feeds = {self.input_name: torch.randn(batch, *self.input_size).numpy()}
        return lambda: session.infer(feeds)

    def close(self) -> None:
        self._dir.cleanup()


def make_backend(name: str, model: nn.Module, device: torch.device, input_size: tuple[int, int, int],
                 batches: Sequence[int], threads: int | None = None
                 ) -> _TorchBackend | _OnnxRuntimeBackend | _TensorRTBackend:
    """Set a backend up once for all batch sizes; raises one of :data:`Unavailable` when it cannot be."""
    if name in ("torch", "compile"):
        return _TorchBackend(model, device, input_size, compile=name == "compile")
    if name == "onnxruntime":
        return _OnnxRuntimeBackend(model, device, input_size, batches, threads)
    if name == "tensorrt":
        return _TensorRTBackend(model, device, input_size, batches)
    raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class BenchSettings:
    """What to measure and how hard. Defaults keep a CPU run of the 299×299 net to a few minutes."""

    device: str = "cpu"
    batches: tuple[int, ...] = (1, 8)
    backends: tuple[str, ...] = BACKENDS
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


@dataclass
class InferenceRow:
    backend: str
    batch: int
    status: str  # ok | unavailable | failed
    reason: str = ""
    p50_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    reps: int = 0
    images_per_s: float | None = None  # batch / p50
    setup_s: float | None = None  # export / compile / engine build and first call
    fraction_flops: float | None = None
    fraction_bandwidth: float | None = None


@dataclass
class TrainRow:
    config: str
    model: str
    status: str  # ok | unavailable | skipped | failed
    reason: str = ""
    batch: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    reps: int = 0
    images_per_s: float | None = None  # batch / p50
    setup_s: float | None = None
    peak_memory_bytes: int | None = None
    memory_kind: str = ""
    vs_reference: float | None = None  # this row's images/s ÷ the reference's, same config
    fraction_flops: float | None = None


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


def count_tasks(settings: BenchSettings) -> int:
    """How many progress steps :func:`run_bench` reports (for a progress bar's total)."""
    train = 2 * len(TRAIN_CONFIG_NAMES) if settings.train else 0
    return len(settings.backends) * len(settings.batches) + train


def run_bench(make_model: Callable[[], nn.Module], input_size: tuple[int, int, int], num_classes: int,
              settings: BenchSettings, *, label: str = "", on_task: Progress | None = None,
              make_reference: Callable[[], nn.Module] | None = None,
              reference_unavailable: str = "") -> BenchReport:
    """Measure everything ``settings`` asks for; ``on_task(name)`` is called as each measurement starts."""
    device = resolve_device(settings.device)
    saved = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if settings.threads:
        torch.set_num_threads(settings.threads)
    # Fixed shapes: let cuDNN time its kernels once, as any GPU training script would (both models).
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        return _run(make_model, input_size, num_classes, settings, device, label, on_task or (lambda _n: None),
                    make_reference, reference_unavailable)
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.benchmark = saved[1]


def _run(make_model: Callable[[], nn.Module], input_size: tuple[int, int, int], num_classes: int,
         settings: BenchSettings, device: torch.device, label: str, on_task: Progress,
         make_reference: Callable[[], nn.Module] | None, reference_unavailable: str) -> BenchReport:
    model = make_model().eval()
    figures = analyse(model, input_size)
    peak = device_peak(device)
    report = BenchReport(environment(device, label), figures.to_dict(),
                         None if peak is None else asdict(peak), asdict(settings))
    precision = precision_of(device)
    for name in settings.backends:
        backend = None
        setup_error: tuple[str, str] | None = None  # a backend that cannot be set up fails every batch
        for batch in settings.batches:
            on_task(f"{name} batch {batch}")
            row = InferenceRow(name, batch, "ok")
            if setup_error is not None:
                row.status, row.reason = setup_error
                report.inference.append(row)
                continue
            try:
                t0 = time.perf_counter()
                if backend is None:
                    try:
                        backend = make_backend(name, model, device, input_size, settings.batches,
                                               settings.threads)
                    except Unavailable as exc:
                        setup_error = ("unavailable", _one_line(exc, with_type=False))
                        raise
                    except Exception as exc:
                        setup_error = ("failed", _one_line(exc))
                        raise
                run = backend.runner(batch)
                run()  # first call: compile / session warm-up / engine, counted as setup
                synchronize(device)
                row.setup_s = time.perf_counter() - t0
                timing = measure(run, lambda: synchronize(device), warmup=settings.warmup,
                                 min_reps=settings.min_reps, max_reps=settings.max_reps,
                                 budget_s=settings.budget_s)
                _fill(row, timing, batch, figures, peak, precision, training=False)
            except Unavailable as exc:
                row.status, row.reason = "unavailable", _one_line(exc, with_type=False)
            except Exception as exc:  # a broken backend is a row, not the end of the run
                row.status, row.reason = "failed", _one_line(exc)
            report.inference.append(row)
        if backend is not None:
            backend.close()
    if settings.train:
        batch = settings.train_batch or max(settings.batches)
        report.train = bench_train(make_model, input_size, num_classes, device, batch, settings, figures,
                                   on_task=on_task, make_reference=make_reference,
                                   reference_unavailable=reference_unavailable)
    return report


def _fill(row: InferenceRow | TrainRow, timing: Timing, batch: int, figures: AnalyticFigures,
          peak: object, precision: str, *, training: bool) -> None:
    row.p50_ms, row.p90_ms, row.min_ms = 1e3 * timing.p50, 1e3 * timing.p90, 1e3 * timing.best
    row.reps = len(timing.samples)
    row.images_per_s = batch / timing.p50
    fractions = fraction_of_peak(figures, row.images_per_s, peak, precision, training=training)  # type: ignore[arg-type]
    row.fraction_flops = fractions["fraction_flops"]
    if isinstance(row, InferenceRow):
        row.fraction_bandwidth = fractions["fraction_bandwidth"]


def _one_line(exc: BaseException, *, with_type: bool = True) -> str:
    """A reason that fits a table row: the first line, the hint appended, the exception type if asked."""
    if isinstance(exc, XBuildError):
        text = exc.message.strip().splitlines()[0] + (f" ({exc.hint})" if exc.hint else "")
    else:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else ""
    return (f"{type(exc).__name__}: {text}" if with_type else text)[:400]


# -------------------------------------------------------------------------------------------- train

TRAIN_CONFIG_NAMES = ("fp32", "bf16", "fp16", "channels_last", "compile", "all")


def train_configs(device: torch.device) -> list[tuple[str, TrainOptions | None, str]]:
    """(name, options or None, reason when skipped): the levers one at a time, then all together."""
    gpu = device.type == "cuda"
    bf16_ok = not gpu or torch.cuda.is_bf16_supported()
    half = "bf16" if bf16_ok else "fp16"
    base = TrainOptions()
    return [
        ("fp32", base, ""),
        ("bf16", base.with_(amp="bf16") if bf16_ok else None, "this GPU has no bf16"),
        ("fp16", base.with_(amp="fp16") if gpu else None,
         "fp16 autocast + GradScaler is a GPU setting; on CPU bf16 is the half precision"),
        ("channels_last", base.with_(channels_last=True), ""),
        ("compile", base.with_(compile=True), ""),
        ("all", base.with_(amp=half, channels_last=True, compile=True), ""),
    ]


def bench_train(make_model: Callable[[], nn.Module], input_size: tuple[int, int, int], num_classes: int,
                device: torch.device, batch: int, settings: BenchSettings, figures: AnalyticFigures, *,
                on_task: Progress, make_reference: Callable[[], nn.Module] | None,
                reference_unavailable: str) -> list[TrainRow]:
    """Training-step throughput and peak memory per configuration, ours and the reference's."""
    peak = device_peak(device)
    rows: list[TrainRow] = []
    for name, options, why in train_configs(device):
        ours = TrainRow(name, "xception-build", "skipped", why, batch)
        ref = TrainRow(name, "timm legacy_xception", "skipped", why, batch)
        for row, factory in ((ours, make_model), (ref, make_reference)):
            on_task(f"train {name} {row.model}")
            if options is None:
                continue
            if factory is None:
                row.status, row.reason = "unavailable", reference_unavailable or "no reference requested"
                continue
            try:
                timing = _measure_train(row, factory, options, device, input_size, num_classes, settings)
                _fill(row, timing, batch, figures, peak, precision_of(device, options.amp), training=True)
                row.status = "ok"
            except Exception as exc:
                row.status, row.reason = "failed", _one_line(exc)
            finally:
                if options.compile:
                    torch._dynamo.reset()
        if ours.images_per_s and ref.images_per_s:
            ours.vs_reference = ours.images_per_s / ref.images_per_s
        rows += [ours, ref]
    return rows


def _measure_train(row: TrainRow, factory: Callable[[], nn.Module], options: TrainOptions,
                   device: torch.device, input_size: tuple[int, int, int], num_classes: int,
                   settings: BenchSettings) -> Timing:
    """Time ``TrainStep`` on one fixed synthetic batch; sets ``setup_s`` and the peak-memory fields."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    reset = _reset_rss_peak()
    torch.manual_seed(0)
    step = TrainStep(factory(), device, options)
    images = step.to_input(torch.randn(row.batch, *input_size, device=device))
    labels = torch.randint(num_classes, (row.batch,), device=device)
    t0 = time.perf_counter()
    step(images, labels)  # first step: torch.compile compiles here
    synchronize(device)
    row.setup_s = time.perf_counter() - t0
    timing = measure(lambda: step(images, labels), lambda: synchronize(device), warmup=settings.warmup,
                     min_reps=settings.min_reps, max_reps=settings.max_reps, budget_s=settings.budget_s)
    if device.type == "cuda":
        row.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
        row.memory_kind = "torch.cuda.max_memory_allocated: tensors of this config only"
    else:
        row.peak_memory_bytes = _rss_peak()
        row.memory_kind = ("process peak RSS (VmHWM, reset per config): whole process incl. torch runtime"
                           if reset else "process peak RSS since start (ru_maxrss, not reset per config)")
    return timing


def _reset_rss_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_peak() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


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
    for module in ("onnxruntime", "timm"):
        try:
            env[module] = __import__(module).__version__
        except Exception:
            env[module] = None
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def timm_reference(num_classes: int) -> tuple[Callable[[], nn.Module] | None, str]:
    """A factory for timm's ``legacy_xception`` (random init), or None and why it is unavailable."""
    try:
        import timm
    except ImportError as exc:
        return None, f"timm is not importable here ({exc}); install timm to measure the reference"
    if not timm.list_models("legacy_xception"):
        return None, f"timm {timm.__version__} has no legacy_xception"
    return (lambda: timm.create_model("legacy_xception", pretrained=False, num_classes=num_classes)), ""


def bench_spec(spec_path: str, settings: BenchSettings, *, overrides: Sequence[str] = (),
               weights: str | None = None, on_task: Progress | None = None) -> BenchReport:
    """Build the spec's model (with ``weights`` if given) and run :func:`run_bench` on it."""
    from xception_build import build_model, load_spec
    from xception_build.spec import spec_hash
    from xception_build.weights import load_weights

    spec = load_spec(spec_path, overrides=list(overrides))

    def make_model() -> nn.Module:
        model = build_model(spec, seed=0)
        if weights:
            load_weights(model, weights)
        return model

    probe = build_model(spec, seed=0)
    input_size = tuple(probe.pretrained_cfg["input_size"])  # type: ignore[index]
    num_classes = int(probe.num_classes)  # type: ignore[arg-type]
    del probe
    reference, why = timm_reference(num_classes) if settings.train and settings.reference else (None, "")
    if settings.train and not settings.reference:
        why = "--no-reference given"
    report = run_bench(make_model, input_size, num_classes, settings,  # type: ignore[arg-type]
                       label=f"{spec_path} ({spec_hash(spec)[:12]})", on_task=on_task,
                       make_reference=reference, reference_unavailable=why)
    report.environment["spec"] = spec_path
    report.environment["spec_hash"] = spec_hash(spec)
    report.environment["weights"] = weights
    return report
