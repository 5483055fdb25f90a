"""Inference backends for ``xbuild bench``: torch eager, ``torch.compile``, ONNX Runtime, TensorRT.

Each backend is a small class set up once for all batch sizes, with ``runner(batch) -> callable``
(one timed call) and ``close()``; :func:`exporters.bench.run_bench` times the callables the same
way for all of them. A backend this machine lacks raises one of :data:`Unavailable` at set-up and
becomes a row saying why. onnxruntime and TensorRT are imported inside the classes that need them.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from xception_build.errors import BackendUnavailable, UserError

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
