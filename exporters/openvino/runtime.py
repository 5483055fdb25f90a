"""OpenVINO's CPU plugin: run an IR (``model.xml`` + ``model.bin``).

The compiled model is asked what inference precision it runs at (``INFERENCE_PRECISION_HINT``,
read back after compiling): OpenVINO computes an fp32 IR in bf16 by default on CPUs with AMX or
AVX512-BF16, which changes the numbers, so the runner reports it as its ``compute_precision``
and the verdict uses the bf16 rule, never the fp32 one. ``--openvino-precision`` pins it: ``f32``
(exact fp32 numerics), ``bf16`` (refused on a CPU that cannot run it, rather than silently run in
f32), ``auto`` (OpenVINO's choice).

openvino is imported inside the functions that need it, so the package imports without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporters.contract import META_PRECISION, BatchProfile, OpenVINOPrecision, TensorSpec
from exporters.onnx.export import read_profile
from exporters.openvino.ir import ir_metadata, openvino_core, read_ir, require_openvino
from exporters.runner import Runner
from xception_build.errors import BackendUnavailable

if TYPE_CHECKING:
    import openvino as ov

_DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "i32": "int32", "u8": "uint8"}


def compile_config(precision: OpenVINOPrecision, threads: int) -> dict[str, str]:
    """The CPU plugin's settings: latency (one request at a time, as verification and the bench
    call it), the precision hint unless ``auto``, the thread count unless 0 (OpenVINO's default)."""
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision != "auto":
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


class OpenVINORunner(Runner):
    """An OpenVINO IR on the CPU plugin."""

    def __init__(self, path: str | Path, *, precision: OpenVINOPrecision = "auto", threads: int = 0) -> None:
        super().__init__("openvino-cpu", Path(path).name)
        self.path = Path(path)
        self.precision = precision
        self.threads = threads
        self.inference_precision = ""  # what the compiled model runs at: f32, bf16 or f16
        self._request: ov.InferRequest | None = None
        self._output_names: list[str] = []

    def _load(self) -> tuple[tuple[TensorSpec, ...], BatchProfile | None]:
        require_openvino()
        model = read_ir(self.path)
        compiled = openvino_core().compile_model(model, "CPU", compile_config(self.precision, self.threads))
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self.precision == "bf16" and ran != "bf16":
            raise BackendUnavailable(f"--openvino-precision bf16: OpenVINO runs {ran} on this CPU (no AMX or "
                                     "AVX512-BF16 instructions), so there is no bf16 result to verify",
                                     hint="use --openvino-precision auto or f32 here")
        self.inference_precision = ran
        metadata = ir_metadata(model)
        artifact_precision = metadata.get(META_PRECISION, "fp32")
        # int8 IRs keep the int8 rule (their float islands run at the hint too); a float IR run in
        # bf16 (or f16) is judged by the rule of the precision that ran
        if artifact_precision != "int8" and ran in ("bf16", "f16"):
            self.compute_precision = "bf16" if ran == "bf16" else "fp16"
        inputs = tuple(TensorSpec(port.get_any_name(), _DTYPES.get(port.get_element_type().get_type_name(), "?"),
                                  tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape()))
                       for port in model.inputs)
        profile = read_profile(metadata, inputs[0].shape)
        self._request = compiled.create_infer_request()
        self._output_names = [port.get_any_name() for port in compiled.outputs]
        return inputs, profile

    def _release(self) -> None:
        self._request = None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._request is not None  # loaded: checked by infer / timed_call
        results = self._request.infer({name: np.ascontiguousarray(array) for name, array in feeds.items()})
        return {name: np.array(results[index], dtype=np.float32)
                for index, name in enumerate(self._output_names)}
