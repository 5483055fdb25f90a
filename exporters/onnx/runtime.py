"""ONNX Runtime: run an ``.onnx`` file on the CPU or CUDA execution provider.

onnxruntime is imported inside the functions that need it, so the package imports without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporters.contract import BatchProfile, Device, TensorSpec
from exporters.onnx.export import load_onnx, read_profile
from exporters.runner import Runner
from xception_build.errors import BackendUnavailable, UserError

if TYPE_CHECKING:
    import onnxruntime as ort

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8"}
PROVIDERS: dict[Device, str] = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def onnxruntime_unavailable(device: Device) -> str | None:
    """Why ONNX Runtime cannot run on ``device`` here (one line), or ``None`` when it can."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed: pip install 'xception-build[cpu]' (or [gpu] for CUDA)"
    if PROVIDERS[device] not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} here has no {PROVIDERS[device]} (providers: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu via "
                "'xception-build[gpu]' in place of [cpu] on a machine with an NVIDIA GPU")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "onnxruntime-gpu is installed but no CUDA GPU is visible"
    return None


def session_options(threads: int = 0) -> ort.SessionOptions:
    """ORT options tuned for latency: all graph optimisations, intra-op threads = ``threads``.

    ``threads=0`` lets ORT use one thread per physical core, which measured fastest for Xception
    (see docs/EXPORT_PERFORMANCE.md).

    Common-subexpression elimination is off: in an int8 QDQ graph it merges the dedicated Q/DQ
    pairs of a tensor that two convolutions read (a block's main path and its shortcut) back into
    one, and ONNX Runtime then runs both convolutions in float. Measured on xception at batch 8:
    int8 1.74x -> 2.08x faster than fp32 with two threads, 2.08x -> 2.51x with one; fp32 unchanged.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("optimization.disable_specified_optimizers", "CommonSubexpressionElimination")
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


class OnnxRuntimeRunner(Runner):
    """An ``.onnx`` file in ONNX Runtime on the CPU or CUDA execution provider.

    The batch profile is the file's own (its static batch, or the ``xbuild.batch_profile`` it
    records) unless ``profile`` is given.
    """

    def __init__(self, path: str | Path, *, device: Device = "cpu", profile: BatchProfile | None = None,
                 threads: int = 0) -> None:
        super().__init__("onnxruntime-cuda" if device == "cuda" else "onnxruntime-cpu", Path(path).name)
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self._profile = profile
        self._session: ort.InferenceSession | None = None
        self._output_names: list[str] = []

    def _load(self) -> tuple[tuple[TensorSpec, ...], BatchProfile | None]:
        reason = onnxruntime_unavailable(self.device)
        if reason is not None:
            raise BackendUnavailable(reason)
        import onnxruntime as ort

        if not self.path.is_file():
            raise UserError(f"{self.path}: no such ONNX file")
        provider = PROVIDERS[self.device]
        try:
            session = ort.InferenceSession(str(self.path), sess_options=session_options(self.threads),
                                           providers=[provider])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf types
            load_onnx(self.path)  # names a file that is not ONNX at all
            reason = str(exc).splitlines()[0]
            raise UserError(f"{self.path}: ONNX Runtime cannot load this model: {reason}") from exc
        if provider not in session.get_providers():  # ORT falls back to CPU silently
            raise BackendUnavailable(f"onnxruntime could not start {provider} here "
                                     f"(running on {', '.join(session.get_providers())})")
        inputs = tuple(TensorSpec(node.name, _ORT_DTYPES.get(node.type, node.type),
                                  tuple(d if isinstance(d, int) else None for d in node.shape))
                       for node in session.get_inputs())
        profile = self._profile or read_profile(session.get_modelmeta().custom_metadata_map, inputs[0].shape)
        self._session = session
        self._output_names = [o.name for o in session.get_outputs()]
        return inputs, profile

    def _release(self) -> None:
        self._session = None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None  # loaded: checked by infer / timed_call
        values = self._session.run(self._output_names, dict(feeds))
        return {name: np.asarray(value, dtype=np.float32)
                for name, value in zip(self._output_names, values, strict=True)}
