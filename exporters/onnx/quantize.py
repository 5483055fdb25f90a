"""fp32 ONNX -> int8 QDQ ONNX, by ONNX Runtime's own quantization tooling (not a hand-written quantizer).

Static quantization in the QDQ format: per-channel symmetric int8 weights, activations with ranges
calibrated on the given images. Two activation schemes (``--int8-activations``, whose ``auto``
picks symmetric for an export with ``--trt`` and asymmetric otherwise):

* ``symmetric``: int8, zero point 0 -- the only int8 Q/DQ TensorRT reads, so the
  same file is what TensorRT builds its INT8 engine from (explicit quantization).
* ``asymmetric``: uint8 with a zero point, ONNX Runtime only. Its ranges fold every ReLU into the
  quantization, which ONNX Runtime's CPU kernels turn into fewer float islands: measured on
  xception at batch 8, 2.6x (two threads) and 3.2x (one thread) the fp32 speed, against 2.1x and
  2.5x for the symmetric file.

``--calib-exclude`` keeps chosen spec blocks in float: their nodes (from the export's
``xbuild.blocks`` map) are not quantized.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from exporters.contract import INPUT_NAME, META_INT8_ACTIVATIONS, META_PRECISION, Int8Activations
from exporters.onnx.blocks import BlockTensors, read_blocks
from exporters.onnx.export import check, metadata_of, set_metadata
from xception_build.errors import BackendUnavailable, UserError
from xception_build.plan import Plan

#: images per calibration batch: ONNX Runtime computes ranges batch by batch
CALIBRATION_BATCH = 8
#: int8 dot-product kernels (VNNI, tensor cores) work on groups of 32 channels
INT8_CHANNEL_MULTIPLE = 32


def quantize_int8(fp32: onnx.ModelProto, calibration: np.ndarray, *, exclude: Sequence[str] = (),
                  activations: Int8Activations = "symmetric") -> onnx.ModelProto:
    """The QDQ int8 model of ``fp32``, calibrated on ``calibration`` (N, C, H, W float32 images).

    ``exclude``: module names of spec blocks to keep in float.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        """The calibration batches, read in ranges: ORT reduces each range to min/max before the next
        (``CalibStridedMinMax``), so memory holds one batch of activations, not all of them."""

        def __init__(self) -> None:
            self.starts = list(range(0, len(calibration), CALIBRATION_BATCH))
            self.pending: Iterator[int] = iter(self.starts)

        def __len__(self) -> int:
            return len(self.starts)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pending = iter(self.starts[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.pending, None)
            if start is None:
                return None
            return {INPUT_NAME: np.ascontiguousarray(calibration[start:start + CALIBRATION_BATCH], dtype=np.float32)}

    nodes = excluded_nodes(read_blocks(fp32), exclude)
    with tempfile.TemporaryDirectory(prefix="xbuild-int8-") as folder, _quiet_quantizer():
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(fp32.SerializeToString())
        symmetric = activations == "symmetric"
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=nodes,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "CalibStridedMinMax": 1,
                           # symmetric: one Q/DQ pair per consumer, or a tensor read by a block's main path
                           # and its shortcut keeps both convolutions in float in ONNX Runtime (measured;
                           # the asymmetric file runs faster without: 2.6x against 1.9x)
                           "DedicatedQDQPair": symmetric})
        quantized = onnx.load(str(target))
    set_metadata(quantized, {**metadata_of(fp32), META_PRECISION: "int8", META_INT8_ACTIVATIONS: activations})
    quantized.producer_name, quantized.producer_version = fp32.producer_name, fp32.producer_version
    check(quantized)
    return quantized


def excluded_nodes(blocks: Sequence[BlockTensors], exclude: Sequence[str]) -> list[str]:
    """The nodes of the blocks named in ``exclude``; an unknown name is a user error with the choices."""
    by_module = {b.module: b for b in blocks}
    nodes: list[str] = []
    for name in exclude:
        if name not in by_module:
            shown = ", ".join(list(by_module)[:6]) + (", ..." if len(by_module) > 6 else "")
            raise UserError(f"--calib-exclude {name}: no such block in the export",
                            hint=f"name blocks as the per-block table does (module column): {shown}")
        nodes += by_module[name].nodes
    return nodes


def channel_warnings(plan: Plan) -> list[str]:
    """Blocks whose channel counts int8 kernels handle badly (not a multiple of 32): said, not silently slow."""
    found: dict[str, set[int]] = {}
    for block in plan.blocks:
        for channels in (block.in_shape.channels, block.out_shape.channels):
            if channels % INT8_CHANNEL_MULTIPLE and channels > 3:  # the RGB input is no kernel's choice
                found.setdefault(block.spec_path, set()).add(channels)
    return [f"{path}: {', '.join(map(str, sorted(counts)))} channels, not a multiple of {INT8_CHANNEL_MULTIPLE}: "
            "int8 kernels (VNNI, tensor cores) pad them, so those layers run below the int8 peak"
            for path, counts in found.items()]


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The tooling logs advice on the root logger ("consider pre-processing"); not for our users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def require_quantization_tooling() -> None:
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable("--precision int8 needs onnxruntime's quantization tooling, which is not installed",
                        hint="pip install 'xception-build[cpu]'") from exc
