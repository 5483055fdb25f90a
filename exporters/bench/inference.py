"""Inference rows of ``xbuild bench``: every backend of the registry, timed through its own runner.

The bench has no runners of its own. Each row opens the backend's :class:`~exporters.runner.Runner`
(the ones verification uses) on what it runs -- the model for the PyTorch backends, the model's
ONNX export (fp32, or its fp16 or int8 artifact) for ONNX Runtime, a static engine per batch
size for TensorRT (an engine tuned for a wide profile can be several times slower at small
batches, TensorRT issue 976) -- and times ``runner.timed_call``. Artifacts are made once per run
in a temporary folder; making them and the first call count as the row's setup.

Several precisions of one backend are timed round-robin at each batch size, so that load from
other processes falls on each alike and the "vs fp32" speed ratio is taken side by side. The int8
artifacts are calibrated on synthetic images: the ranges change no kernel, so not the speed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from exporters.backends import BACKENDS, ArtifactBackend, Backend, PytorchBackend
from exporters.bench.analysis import AnalyticFigures
from exporters.bench.peaks import DevicePeak, device_peak, peak_precision
from exporters.bench.timing import (
    BenchSettings,
    InferenceRow,
    Progress,
    Timing,
    fill_row,
    measure,
    measure_interleaved,
    one_line,
)
from exporters.contract import (
    INPUT_NAME,
    BackendName,
    BatchProfile,
    Int8Activations,
    Int8ActivationsChoice,
    Precision,
    RunSettings,
    int8_activations_for,
)
from exporters.runner import Runner
from xception_build.errors import BackendUnavailable
from xception_build.training import synchronize

if TYPE_CHECKING:
    import onnx


_Key = tuple[BackendName, Precision]
PYTORCH_FP32_ONLY = "PyTorch backends run the fp32 model (--train times autocast)"


class ArtifactFiles:
    """The files artifact backends run, made on first use and kept for the whole bench run."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], batches: tuple[int, ...],
                 int8_activations: Int8ActivationsChoice = "auto") -> None:
        self.model, self.input_size, self.int8_activations = model, input_size, int8_activations
        self.profile = BatchProfile(min(batches), max(batches), max(2, *batches))
        self._dir = tempfile.TemporaryDirectory(prefix="xbuild-bench-")
        self.folder = Path(self._dir.name)
        self._onnx: dict[tuple[Precision, Int8Activations | None], Path] = {}

    def scheme(self, *, tensorrt: bool = False, openvino: bool = False) -> Int8Activations:
        """The activations of the int8 file a backend runs, chosen as ``xbuild export`` chooses them."""
        return int8_activations_for(self.int8_activations, tensorrt=tensorrt, openvino=openvino)

    @functools.cached_property
    def _fp32(self) -> onnx.ModelProto:
        """The one export every precision is made from, as ``xbuild export`` makes them (dynamic batch)."""
        from exporters.onnx.export import export_onnx

        cpu_copy = copy.deepcopy(self.model).to("cpu").eval()  # the exporter traces on CPU
        return export_onnx(cpu_copy, self.input_size, profile=self.profile)

    def onnx(self, precision: Precision = "fp32", *, tensorrt: bool = False, openvino: bool = False) -> Path:
        """The model's ONNX artifact of ``precision`` for ONNX Runtime or, with ``tensorrt`` or
        ``openvino``, as the source of an engine or IR (only int8 differs: its activation scheme)."""
        scheme = self.scheme(tensorrt=tensorrt, openvino=openvino) if precision == "int8" else None
        key = (precision, scheme)
        if key not in self._onnx:
            from exporters.onnx.export import serialize, to_fp16
            from exporters.onnx.quantize import quantize_int8

            proto = self._fp32
            if precision == "fp16":
                proto = to_fp16(proto)
            elif scheme is not None:
                images = np.random.default_rng(0).standard_normal((16, *self.input_size), dtype=np.float32)
                proto = quantize_int8(proto, images, activations=scheme)
            path = self.folder / (f"model.int8.{scheme}.onnx" if scheme else f"model.{precision}.onnx")
            path.write_bytes(serialize(proto))
            self._onnx[key] = path
        return self._onnx[key]

    def ir(self, precision: Precision = "fp32") -> Path:
        """The OpenVINO IR of ``precision``, made from its ONNX file as ``xbuild export --openvino`` makes it."""
        from exporters.openvino.ir import write_ir

        source = self.onnx(precision, openvino=True)
        xml = source.with_suffix(".xml")
        if not xml.is_file():
            write_ir(source, xml)
        return xml

    def plan(self, batch: int, precision: Precision = "fp32") -> Path:
        """A static TensorRT engine of ``precision`` for ``batch``, built from the ONNX it needs."""
        from exporters.tensorrt.engine import BuildSettings, build_engine, build_recipe, major_version

        if precision == "int8" and self.scheme(tensorrt=True) == "asymmetric":
            raise BackendUnavailable("TensorRT reads only symmetric int8: drop --int8-activations asymmetric")
        path = self.folder / f"model.{precision}.b{batch}.plan"
        settings = BuildSettings(BatchProfile(batch, batch, batch), self.input_size, precision)
        source = self.onnx(build_recipe(major_version(), precision).onnx_precision, tensorrt=True)
        build_engine(source, path, settings, timing_cache=self.folder / "timing.cache")
        return path

    def close(self) -> None:
        self._dir.cleanup()


def _runner_factory(backend: Backend, model: nn.Module, files: ArtifactFiles, precision: Precision,
                    run: RunSettings) -> tuple[Callable[[int], Runner], bool]:
    """A function making the runner for one batch size, and whether one runner serves every batch."""
    if isinstance(backend, PytorchBackend):
        # strict_fp32 off: the bench measures what users run, TF32 included where cuDNN uses it
        return (lambda _batch: backend.runner(model, files.input_size, strict_fp32=False)), True
    assert isinstance(backend, ArtifactBackend)
    if backend.runs == "tensorrt-plan":
        return (lambda batch: backend.runner(files.plan(batch, precision))), False
    if backend.runs == "openvino-ir":
        return (lambda _batch: backend.runner(files.ir(precision), run)), True
    return (lambda _batch: backend.runner(files.onnx(precision), run)), True


def bench_inference(model: nn.Module, input_size: tuple[int, int, int], settings: BenchSettings,
                    figures: AnalyticFigures, on_task: Progress) -> list[InferenceRow]:
    """One row per (backend, precision, batch); a backend this machine lacks is a row saying why."""
    rows: list[InferenceRow] = []
    files = ArtifactFiles(model, input_size, settings.batches, settings.int8_activations)
    try:
        rows += _bench_all(model, files, settings, figures, on_task)
    finally:
        files.close()
    return rows


class _Opener:
    """Opens a backend's runner for one precision, once for all batches where one runner serves all;
    a runner that cannot be opened is remembered, so every later row says why without retrying."""

    def __init__(self, stack: contextlib.ExitStack, make: Callable[[int], Runner], shared: bool) -> None:
        self.stack, self.make, self.shared = stack, make, shared
        self.runner: Runner | None = None
        self.error: tuple[str, str] | None = None

    def open(self, batch: int) -> Runner:
        if self.error is not None:
            raise _Refused(*self.error)
        if self.runner is not None and self.shared:
            return self.runner
        try:
            self.runner = self.stack.enter_context(self.make(batch))
        except BackendUnavailable as exc:
            if self.shared:
                self.error = ("unavailable", one_line(exc, with_type=False))
            raise
        except Exception as exc:
            if self.shared:
                self.error = ("failed", one_line(exc))
            raise
        return self.runner


class _Refused(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclasses.dataclass
class _Lane:
    """One backend's rows and runners in a bench run."""

    name: BackendName
    device: torch.device
    reason: str | None  # why the backend cannot run here
    peak: DevicePeak | None
    rows: dict[tuple[Precision, int], InferenceRow]
    openers: dict[Precision, _Opener]


def _lane(name: BackendName, model: nn.Module, files: ArtifactFiles, settings: BenchSettings,
          stack: contextlib.ExitStack) -> _Lane:
    backend = BACKENDS[name]
    device = torch.device(backend.device)
    reason = backend.unavailable()
    int8_scheme = files.scheme(tensorrt=backend.runs == "tensorrt-plan", openvino=backend.runs == "openvino-ir")
    rows = {(p, b): InferenceRow(backend=name, batch=b, precision=p,
                                 int8_activations=int8_scheme if p == "int8" and backend.runs != "pytorch" else None)
            for p in settings.precisions for b in settings.batches}
    runnable = [p for p in settings.precisions if p == "fp32" or not isinstance(backend, PytorchBackend)]
    run = RunSettings(threads=settings.threads or 0, openvino_precision=settings.openvino_precision)
    openers = {p: _Opener(stack, *_runner_factory(backend, model, files, p, run)) for p in runnable}
    return _Lane(name, device, reason, device_peak(device) if reason is None else None, rows, openers)


def _bench_all(model: nn.Module, files: ArtifactFiles, settings: BenchSettings, figures: AnalyticFigures,
               on_task: Progress) -> list[InferenceRow]:
    """Every (backend, precision) at one batch size is timed round-robin with the others, so the
    ratios between backends are taken side by side, as those between precisions are."""
    with contextlib.ExitStack() as stack:
        lanes = [_lane(name, model, files, settings, stack) for name in settings.backends]
        for batch in settings.batches:
            calls: dict[tuple[BackendName, Precision], Callable[[], object]] = {}
            for lane in lanes:
                for precision in settings.precisions:
                    row = lane.rows[(precision, batch)]
                    on_task(f"{lane.name} {precision} batch {batch}")
                    if lane.reason is not None:
                        row.status, row.reason = "unavailable", lane.reason
                    elif precision not in lane.openers:
                        row.status, row.reason = "skipped", PYTORCH_FP32_ONLY
                    else:
                        call = _set_up(row, lane.openers[precision], files, lane.device)
                        if call is not None:
                            calls[(lane.name, precision)] = call
            devices = {lane.device for lane in lanes if lane.reason is None}
            by_name = {lane.name: lane for lane in lanes}
            for (name, precision), timing in _time(calls, settings, devices).items():
                lane = by_name[name]
                row = lane.rows[(precision, batch)]
                # TensorRT engines are built with TF32 cleared: their fp32 is compared with the plain fp32 peak
                fill_row(row, timing, figures, lane.peak, row.compute_precision or (
                         precision if precision != "fp32" else peak_precision(lane.device,
                                                                              strict_fp32=name == "tensorrt")),
                         training=False)
            baseline = next((lane.rows[("fp32", batch)] for lane in lanes if ("fp32", batch) in lane.rows
                             and lane.rows[("fp32", batch)].p50_ms), None)
            for name, precision in calls:
                lane = by_name[name]
                row, base = lane.rows[(precision, batch)], lane.rows.get(("fp32", batch))
                if base is not None and base.p50_ms and row.p50_ms:
                    row.vs_fp32 = base.p50_ms / row.p50_ms
                if baseline is not None and baseline.p50_ms and row.p50_ms:
                    row.vs_baseline = baseline.p50_ms / row.p50_ms
                    row.baseline = f"{baseline.backend} fp32"
    return [row for lane in lanes for row in lane.rows.values()]


def _set_up(row: InferenceRow, opener: _Opener, files: ArtifactFiles, device: torch.device
            ) -> Callable[[], object] | None:
    """Open the runner and make the first call (the row's setup); None, with the row saying why, if it fails."""
    try:
        t0 = time.perf_counter()
        runner = opener.open(row.batch)
        row.compute_precision = runner.compute_precision
        feeds = {INPUT_NAME: np.random.default_rng(row.batch).standard_normal((row.batch, *files.input_size),
                                                                              dtype=np.float32)}
        call = runner.timed_call(feeds)
        call()  # first call: compile / session warm-up, counted as setup
        synchronize(device)
        row.setup_s = time.perf_counter() - t0
        return call
    except _Refused as refused:
        row.status, row.reason = refused.status, refused.reason
    except BackendUnavailable as exc:
        row.status, row.reason = "unavailable", one_line(exc, with_type=False)
    except Exception as exc:  # a broken backend is a row, not the end of the run
        row.status, row.reason = "failed", one_line(exc)
    return None


def _time(calls: dict[_Key, Callable[[], object]], settings: BenchSettings,
          devices: set[torch.device]) -> dict[_Key, Timing]:
    """One call: the adaptive loop. Several: round-robin, as many rounds as the budget allows."""
    def sync() -> None:
        for device in devices:
            synchronize(device)

    if len(calls) == 1:
        (key, call), = calls.items()
        return {key: measure(call, sync, warmup=settings.warmup, min_reps=settings.min_reps,
                             max_reps=settings.max_reps, budget_s=settings.budget_s)}
    if not calls:
        return {}
    t0 = time.perf_counter()
    for call in calls.values():
        call()
    sync()
    one_round = max(time.perf_counter() - t0, 1e-9)
    rounds = min(settings.max_reps, max(settings.min_reps, math.ceil(settings.budget_s * len(calls) / one_round)))
    return measure_interleaved(calls, sync, warmup=settings.warmup, reps=rounds)
