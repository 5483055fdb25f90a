"""Inference rows of ``xbuild bench``: every backend of the registry, timed through its own runner.

The bench has no runners of its own. Each row opens the backend's :class:`~exporters.runner.Runner`
(the ones verification uses) on what it runs -- the model for the PyTorch backends, the model's
ONNX export for ONNX Runtime, a static engine per batch size for TensorRT (an engine tuned for a
wide profile can be several times slower at small batches, TensorRT issue 976) -- and times
``runner.timed_call``. Artifacts are made once per run in a temporary folder; making them and the
first call count as the row's setup.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exporters.backends import BACKENDS, ArtifactBackend, Backend, PytorchBackend
from exporters.bench.analysis import AnalyticFigures
from exporters.bench.peaks import device_peak, peak_precision
from exporters.bench.timing import BenchSettings, InferenceRow, Progress, fill_row, measure, one_line
from exporters.contract import INPUT_NAME, BackendName, BatchProfile
from exporters.runner import Runner
from xception_build.errors import BackendUnavailable
from xception_build.training import synchronize


class ArtifactFiles:
    """The files artifact backends run, made on first use and kept for the whole bench run."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], batches: tuple[int, ...]) -> None:
        self.model, self.input_size = model, input_size
        self.profile = BatchProfile(min(batches), max(batches), max(2, *batches))
        self._dir = tempfile.TemporaryDirectory(prefix="xbuild-bench-")
        self.folder = Path(self._dir.name)
        self._onnx: Path | None = None

    def onnx(self) -> Path:
        """The model's fp32 ONNX export, by ``xbuild export``'s own exporter (dynamic batch)."""
        if self._onnx is None:
            from exporters.onnx.export import export_onnx, serialize

            cpu_copy = copy.deepcopy(self.model).to("cpu").eval()  # the exporter traces on CPU
            path = self.folder / "model.onnx"
            path.write_bytes(serialize(export_onnx(cpu_copy, self.input_size, profile=self.profile)))
            self._onnx = path
        return self._onnx

    def plan(self, batch: int) -> Path:
        """A static fp32 TensorRT engine for ``batch`` (TF32 off), built from :meth:`onnx`."""
        from exporters.tensorrt.engine import BuildSettings, build_engine

        path = self.folder / f"model.b{batch}.plan"
        settings = BuildSettings(BatchProfile(batch, batch, batch), self.input_size)
        build_engine(self.onnx(), path, settings, timing_cache=self.folder / "timing.cache")
        return path

    def close(self) -> None:
        self._dir.cleanup()


def _runner_factory(backend: Backend, model: nn.Module, files: ArtifactFiles,
                    threads: int | None) -> tuple[Callable[[int], Runner], bool]:
    """A function making the runner for one batch size, and whether one runner serves every batch."""
    if isinstance(backend, PytorchBackend):
        # strict_fp32 off: the bench measures what users run, TF32 included where cuDNN uses it
        return (lambda _batch: backend.runner(model, files.input_size, strict_fp32=False)), True
    assert isinstance(backend, ArtifactBackend)
    if backend.runs == "tensorrt-plan":
        return (lambda batch: backend.runner(files.plan(batch))), False
    return (lambda _batch: backend.runner(files.onnx(), threads=threads or 0)), True


def bench_inference(model: nn.Module, input_size: tuple[int, int, int], settings: BenchSettings,
                    figures: AnalyticFigures, on_task: Progress) -> list[InferenceRow]:
    """One row per (backend, batch); a backend this machine lacks is a row saying why."""
    rows: list[InferenceRow] = []
    files = ArtifactFiles(model, input_size, settings.batches)
    try:
        for name in settings.backends:
            rows += _bench_backend(name, model, files, settings, figures, on_task)
    finally:
        files.close()
    return rows


def _bench_backend(name: BackendName, model: nn.Module, files: ArtifactFiles, settings: BenchSettings,
                   figures: AnalyticFigures, on_task: Progress) -> list[InferenceRow]:
    backend = BACKENDS[name]
    device = torch.device(backend.device)
    reason = backend.unavailable()
    peak = device_peak(device) if reason is None else None
    # TensorRT engines are built with TF32 cleared: their fp32 is compared with the plain fp32 peak
    precision = peak_precision(device, strict_fp32=name == "tensorrt")
    rows = [InferenceRow(backend=name, batch=batch) for batch in settings.batches]
    make_runner, shared = _runner_factory(backend, model, files, settings.threads)
    setup_error: tuple[str, str] | None = None  # a shared runner that cannot be opened fails every batch
    with contextlib.ExitStack() as stack:
        runner: Runner | None = None
        for row in rows:
            on_task(f"{name} batch {row.batch}")
            if reason is not None:
                row.status, row.reason = "unavailable", reason
                continue
            if setup_error is not None:
                row.status, row.reason = setup_error
                continue
            try:
                t0 = time.perf_counter()
                if runner is None or not shared:
                    try:
                        runner = stack.enter_context(make_runner(row.batch))
                    except BackendUnavailable as exc:
                        if shared:
                            setup_error = ("unavailable", one_line(exc, with_type=False))
                        raise
                    except Exception as exc:
                        if shared:
                            setup_error = ("failed", one_line(exc))
                        raise
                feeds = {INPUT_NAME: np.random.default_rng(row.batch).standard_normal(
                    (row.batch, *files.input_size), dtype=np.float32)}
                call = runner.timed_call(feeds)
                call()  # first call: compile / session warm-up, counted as setup
                synchronize(device)
                row.setup_s = time.perf_counter() - t0
                timing = measure(call, lambda: synchronize(device), warmup=settings.warmup,
                                 min_reps=settings.min_reps, max_reps=settings.max_reps, budget_s=settings.budget_s)
                fill_row(row, timing, figures, peak, precision, training=False)
            except BackendUnavailable as exc:
                row.status, row.reason = "unavailable", one_line(exc, with_type=False)
            except Exception as exc:  # a broken backend is a row, not the end of the run
                row.status, row.reason = "failed", one_line(exc)
    return rows
