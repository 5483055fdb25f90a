"""The registry of backends: one name each, used by ``verify --backend``, ``bench --backend``, the
manifest, the reports and the docs.

A backend is something that runs a model: PyTorch (eager or compiled) on a device, ONNX Runtime
on a device, OpenVINO on the CPU, or TensorRT. Each entry says what it runs (the PyTorch model
itself, an ``.onnx``, an OpenVINO IR, a TensorRT plan), why it cannot run here (one line, or
``None``), and makes a :class:`Runner`.
Adding a backend is one entry here plus its runner.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from exporters.contract import (
    BACKEND_NAMES,
    DEFAULT_RUN_SETTINGS,
    BackendName,
    Device,
    ModelArtifactKind,
    RunSettings,
)
from exporters.runner import Runner, TorchRunner
from xception_build.errors import UserError

if TYPE_CHECKING:
    from torch import nn

#: what a backend runs: the PyTorch model, or a model artifact file of that kind
Runs = Literal["pytorch", ModelArtifactKind]


@dataclass(frozen=True)
class Backend(ABC):
    name: BackendName
    runs: Runs
    device: Device
    description: str

    @abstractmethod
    def unavailable(self) -> str | None:
        """Why this backend cannot run on this machine (one line), or ``None`` when it can."""


@dataclass(frozen=True)
class PytorchBackend(Backend):
    compile: bool = False

    def unavailable(self) -> str | None:
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return f"no CUDA GPU is visible to torch {torch.__version__}"
        return None

    def runner(self, model: nn.Module, input_size: tuple[int, int, int], *, strict_fp32: bool = True) -> TorchRunner:
        return TorchRunner(model, input_size, device=self.device, compile=self.compile, strict_fp32=strict_fp32)


@dataclass(frozen=True)
class ArtifactBackend(Backend, ABC):
    """A backend that runs a model artifact file (``runs`` is its kind)."""

    @abstractmethod
    def runner(self, path: Path, settings: RunSettings = DEFAULT_RUN_SETTINGS) -> Runner:
        """A runner for the artifact at ``path`` (not loaded yet: use it in a ``with`` block)."""


@dataclass(frozen=True)
class OnnxRuntimeBackend(ArtifactBackend):
    def unavailable(self) -> str | None:
        from exporters.onnx.runtime import onnxruntime_unavailable

        return onnxruntime_unavailable(self.device)

    def runner(self, path: Path, settings: RunSettings = DEFAULT_RUN_SETTINGS) -> Runner:
        from exporters.onnx.runtime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device=self.device, threads=settings.threads)


@dataclass(frozen=True)
class OpenVINOBackend(ArtifactBackend):
    def unavailable(self) -> str | None:
        from exporters.openvino.ir import openvino_unavailable

        return openvino_unavailable()

    def runner(self, path: Path, settings: RunSettings = DEFAULT_RUN_SETTINGS) -> Runner:
        from exporters.openvino.runtime import OpenVINORunner

        return OpenVINORunner(path, precision=settings.openvino_precision, threads=settings.threads)


@dataclass(frozen=True)
class TensorRTBackend(ArtifactBackend):
    def unavailable(self) -> str | None:
        from exporters.tensorrt.engine import tensorrt_unavailable

        return tensorrt_unavailable()

    def runner(self, path: Path, settings: RunSettings = DEFAULT_RUN_SETTINGS) -> Runner:
        from exporters.tensorrt.runtime import TensorRTRunner

        return TensorRTRunner(path)


BACKENDS: dict[BackendName, Backend] = {backend.name: backend for backend in (
    PytorchBackend("pytorch-cpu", "pytorch", "cpu", "PyTorch eager on the CPU (the reference)"),
    PytorchBackend("pytorch-cuda", "pytorch", "cuda", "PyTorch eager on a CUDA GPU"),
    PytorchBackend("pytorch-compile-cpu", "pytorch", "cpu", "torch.compile on the CPU", compile=True),
    PytorchBackend("pytorch-compile-cuda", "pytorch", "cuda", "torch.compile on a CUDA GPU", compile=True),
    OnnxRuntimeBackend("onnxruntime-cpu", "onnx", "cpu", "ONNX Runtime, CPU execution provider"),
    OnnxRuntimeBackend("onnxruntime-cuda", "onnx", "cuda", "ONNX Runtime, CUDA execution provider"),
    OpenVINOBackend("openvino-cpu", "openvino-ir", "cpu", "OpenVINO IR on OpenVINO's CPU plugin"),
    TensorRTBackend("tensorrt", "tensorrt-plan", "cuda", "TensorRT engine (plan) on a CUDA GPU"),
)}
if tuple(BACKENDS) != BACKEND_NAMES:  # pragma: no cover - a broken edit of this file
    raise ImportError("exporters.backends: every BackendName needs exactly one registry entry")
_BY_NAME: dict[str, Backend] = {str(name): backend for name, backend in BACKENDS.items()}


def artifact_backends(kind: ModelArtifactKind) -> list[ArtifactBackend]:
    """The backends that run artifacts of ``kind``, in the order verification tries them."""
    return [b for b in BACKENDS.values() if isinstance(b, ArtifactBackend) and b.runs == kind]


def backends_for(device: Device) -> tuple[BackendName, ...]:
    """What ``xbuild bench --device DEVICE`` measures when no ``--backend`` is given."""
    return tuple(name for name, b in BACKENDS.items() if b.device == device)


def parse_backend_names(values: Iterable[str], option: str = "--backend") -> tuple[BackendName, ...]:
    """Names from a repeatable option whose values may also be comma-separated; an unknown name
    is a :class:`UserError` with a did-you-mean and the valid choices."""
    names: list[BackendName] = []
    for value in values:
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            if part not in _BY_NAME:
                close = [n for n in BACKEND_NAMES if n.startswith(part)] or \
                    difflib.get_close_matches(part, BACKEND_NAMES, n=1, cutoff=0.5)
                hint = (f"did you mean '{close[0]}'? " if close else "") + f"valid choices: {', '.join(BACKEND_NAMES)}"
                raise UserError(f"{option} {part!r}: unknown backend", hint=hint)
            name = _BY_NAME[part].name
            if name not in names:
                names.append(name)
    return tuple(names)
