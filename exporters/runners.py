"""Runners: one ``infer(feeds) -> outputs`` signature for PyTorch, ONNX Runtime and TensorRT.

The split follows Polygraphy: a runner only runs; comparing is :mod:`exporters.compare`'s job. The
base class checks input names, dtypes, shapes and the batch profile once for every backend, so a
wrong feed gives the same clean :class:`UserError` whatever runs it, and a new backend is small.
onnxruntime is imported inside the functions that need it, so this module imports without it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xception_build.errors import BackendUnavailable, UserError

#: The name every exported graph uses for its single input and output.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an artifact accepts: TensorRT's MIN:OPT:MAX optimization profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise UserError(f"batch profile {self}: need 1 <= MIN <= OPT <= MAX")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """Parse ``MIN:OPT:MAX`` or a single ``N`` (meaning ``N:N:N``)."""
        parts = text.split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) == 1:
            values *= 3
        if len(values) != 3:
            raise UserError(f"--batch {text!r}: expected MIN:OPT:MAX (e.g. 1:8:16) or one batch size N")
        return cls(*values)

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def check_batches(self) -> tuple[int, ...]:
        """The batch sizes verification runs: min, opt and max, each once."""
        return tuple(sorted({self.min, self.opt, self.max}))

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one input; ``None`` marks the (dynamic) batch dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


class Runner(ABC):
    """Base of every backend: validates feeds once, then calls :meth:`_infer`."""

    #: backend name used in reports, e.g. ``onnxruntime-cpu``
    backend = "runner"

    def __init__(self, inputs: Sequence[TensorSpec], profile: BatchProfile | None, source: str) -> None:
        self.inputs = tuple(inputs)
        self.profile = profile
        self.source = source  # what the runner runs, for messages (a file name or "pytorch")

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; raises :class:`UserError` for feeds the artifact cannot take."""
        self.check_feeds(feeds)
        return self._infer(feeds)

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        expected = [spec.name for spec in self.inputs]
        if sorted(feeds) != sorted(expected):
            raise UserError(f"{self.source}: inputs {sorted(feeds)} given, the model takes {expected}")
        for spec in self.inputs:
            array = feeds[spec.name]
            if str(array.dtype) != spec.dtype:
                raise UserError(f"{self.source}: input {spec.name!r} has dtype {array.dtype}, "
                                f"the model takes {spec.dtype}")
            wanted = tuple("N" if d is None else d for d in spec.shape)
            if array.ndim != len(spec.shape) or any(
                    d is not None and d != a for d, a in zip(spec.shape, array.shape, strict=True)):
                raise UserError(f"{self.source}: input {spec.name!r} has shape {tuple(array.shape)}, "
                                f"the model takes {wanted}")
            batch = int(array.shape[0]) if array.ndim else 0
            if self.profile is not None and not self.profile.contains(batch):
                raise UserError(f"{self.source}: batch {batch} is outside the batch profile "
                                f"{self.profile} (MIN:OPT:MAX) the artifact was built for",
                                hint="re-export with a wider --batch MIN:OPT:MAX")

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds; return float32 numpy arrays by output name."""


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Turn TF32 off while the reference runs: it would blur a strict fp32 comparison on Ampere+."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class TorchRunner(Runner):
    """The PyTorch model in eval mode: the reference every artifact is compared against."""

    backend = "pytorch"

    def __init__(self, model: Any, input_size: Sequence[int], profile: BatchProfile | None = None,
                 device: str = "cpu") -> None:
        super().__init__([TensorSpec(INPUT_NAME, "float32", (None, *input_size))], profile, "pytorch")
        self.model = model.eval().to(device)
        self.device = device

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with strict_fp32(), torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(feeds[INPUT_NAME])).to(self.device))
        return {OUTPUT_NAME: out.float().cpu().numpy()}


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8"}
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def onnxruntime_unavailable(device: str) -> str | None:
    """Why ONNX Runtime cannot run on ``device`` here (one line), or ``None`` when it can."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed: pip install 'xception-build[cpu]' (or [gpu] for CUDA)"
    if _PROVIDERS[device] not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} here has no {_PROVIDERS[device]} (providers: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu via "
                "'xception-build[gpu]' in place of [cpu] on a machine with an NVIDIA GPU")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "onnxruntime-gpu is installed but no CUDA GPU is visible"
    return None


def session_options(threads: int = 0) -> Any:
    """ORT options tuned for latency: all graph optimisations, intra-op threads = ``threads``.

    ``threads=0`` lets ORT use one thread per physical core, which measured fastest for Xception
    (see docs/EXPORT_PERFORMANCE.md).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


class OnnxRuntimeRunner(Runner):
    """An ``.onnx`` file in ONNX Runtime on the CPU or CUDA execution provider."""

    def __init__(self, path: str | Path, *, device: str = "cpu", profile: BatchProfile | None = None,
                 threads: int = 0) -> None:
        reason = onnxruntime_unavailable(device)
        if reason is not None:
            raise BackendUnavailable(reason)
        import onnxruntime as ort

        from exporters.onnx_export import load_onnx, read_profile

        self.backend = f"onnxruntime-{device}"
        if not Path(path).is_file():
            raise UserError(f"{path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                                providers=[_PROVIDERS[device]])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf types
            load_onnx(path)  # names a file that is not ONNX at all
            reason = str(exc).splitlines()[0]
            raise UserError(f"{path}: ONNX Runtime cannot load this model: {reason}") from exc
        if _PROVIDERS[device] not in self.session.get_providers():  # ORT falls back to CPU silently
            raise BackendUnavailable(f"onnxruntime could not start {_PROVIDERS[device]} here "
                                     f"(running on {', '.join(self.session.get_providers())})")
        specs = []
        for node in self.session.get_inputs():
            shape = tuple(d if isinstance(d, int) else None for d in node.shape)
            specs.append(TensorSpec(node.name, _ORT_DTYPES.get(node.type, node.type), shape))
        if profile is None:
            profile = read_profile(self.session.get_modelmeta().custom_metadata_map, specs[0].shape)
        self._output_names = [o.name for o in self.session.get_outputs()]  # read once, not per call
        super().__init__(specs, profile, Path(path).name)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._output_names
        values = self.session.run(names, dict(feeds))
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(names, values, strict=True)}
