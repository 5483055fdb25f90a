"""PyTorch model -> one self-contained, reproducible ``.onnx`` file.

Why each step is here:

* The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) is used, not the TorchScript one:
  both take about as long and give the same graph for Xception, but the TorchScript exporter is
  deprecated since torch 2.9 and names tensors ``onnx::Conv_445``; docs/EXPORT.md has the figures.
* Its default ``optimize=True`` runs onnxscript's rewriter, which folds every BatchNorm into the
  convolution before it; :func:`unfolded_batchnorms` checks that nothing was left behind.
* Tracing uses batch >= 2: tracing with batch 1 specialises the batch dimension.
* Node metadata (stack traces with absolute paths, FX node dumps) and the exported-program
  signature are stripped and nodes renamed in graph order, so the same spec and weights give
  byte-identical files on any machine with the same library versions.
* The model is serialised in memory and written by the caller; nothing here half-writes a file.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from google.protobuf.message import DecodeError

from exporters.contract import (
    INPUT_NAME,
    META_BATCH_PROFILE,
    META_BLOCKS,
    META_PRECISION,
    OUTPUT_NAME,
    BatchProfile,
    Precision,
)
from exporters.onnx.blocks import block_map, encode, renamed
from xception_build.errors import UserError

if TYPE_CHECKING:
    from torch import nn

DEFAULT_OPSET = 18
#: protobuf's hard limit; bigger models would need ONNX external data
_PROTO_LIMIT = 2**31 - 1


def export_onnx(model: nn.Module, input_size: Sequence[int], *, profile: BatchProfile, static_batch: bool = False,
                opset: int = DEFAULT_OPSET, metadata: Mapping[str, str] | None = None,
                producer_version: str = "") -> onnx.ModelProto:
    """Export ``model`` (put in eval mode) to a checked, self-contained, deterministic ModelProto.

    A model compiled from a spec also gets the ``xbuild.blocks`` map of its spec blocks.
    """
    import torch

    check_export_options(profile, static_batch=static_batch, opset=opset)
    model = model.eval()
    # torch.export needs MIN < MAX for a dynamic dimension; a one-size profile (--batch N) still
    # gets a dynamic graph, and the runners hold it to N through the recorded profile.
    upper = max(profile.max, profile.min + 1)
    trace_batch = profile.opt if static_batch else min(max(2, profile.min), upper)
    example = torch.zeros(trace_batch, *input_size)
    dynamic_shapes = None if static_batch else ({0: torch.export.Dim("batch", min=profile.min, max=upper)},)
    with _quiet_exporter():
        program = torch.onnx.export(
            model, (example,), None, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=False, optimize=True,
            verbose=False)
    if program is None:  # only None when writing to a file
        raise RuntimeError("torch.onnx.export returned no ONNXProgram")
    proto = program.model_proto
    plan = getattr(model, "plan", None)
    blocks = block_map(proto, [b.module_name for b in plan.blocks]) if plan is not None else []
    names = _make_deterministic(proto, producer_version)
    extra = {META_BLOCKS: encode(renamed(blocks, names))} if blocks else {}
    set_metadata(proto, {**(metadata or {}), META_BATCH_PROFILE: str(profile), **extra})
    left = unfolded_batchnorms(proto)
    if left:  # an exporter regression, not a user error: fail loudly
        raise RuntimeError(f"BatchNormalization still follows a Conv after export: {left[:5]}")
    check(proto)
    return proto


def check_export_options(profile: BatchProfile, *, static_batch: bool, opset: int) -> None:
    """The option checks :func:`export_onnx` needs; cheap, so callers run them before any real work."""
    newest = onnx.defs.onnx_opset_version()
    if not DEFAULT_OPSET <= opset <= newest:
        raise UserError(f"--opset {opset}: the dynamo exporter supports opsets {DEFAULT_OPSET} to {newest}")
    if static_batch and not profile.is_static:
        raise UserError(f"--static-batch needs one batch size, got the profile {profile}",
                        hint="give --batch N together with --static-batch")


def _make_deterministic(proto: onnx.ModelProto, producer_version: str) -> dict[str, str]:
    """Drop machine-specific text and name nodes by position, so re-exports are byte-identical.

    Returns the node renames (old name -> new name)."""
    proto.producer_name = "xception-build"
    proto.producer_version = producer_version
    proto.doc_string = ""
    del proto.metadata_props[:]
    graph = proto.graph
    del graph.metadata_props[:]
    graph.doc_string = ""
    names = {}
    for index, node in enumerate(graph.node):
        del node.metadata_props[:]
        node.doc_string = ""
        names[node.name] = node.name = f"{node.op_type}_{index}"
    return names


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace ``metadata_props`` with ``metadata``, sorted by key for reproducibility."""
    merged = {p.key: p.value for p in proto.metadata_props} | dict(metadata)
    del proto.metadata_props[:]
    for key in sorted(merged):
        proto.metadata_props.add(key=key, value=str(merged[key]))


def unfolded_batchnorms(proto: onnx.ModelProto) -> list[str]:
    """Names of BatchNormalization nodes whose input comes straight from a Conv."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    return [node.name for node in proto.graph.node if node.op_type == "BatchNormalization"
            and node.input[0] in producers and producers[node.input[0]].op_type == "Conv"]


def check(proto: onnx.ModelProto) -> None:
    """Full ONNX check (with shape inference) and the 2 GB single-file limit."""
    if proto.ByteSize() > _PROTO_LIMIT:
        raise UserError("the model is larger than 2 GB; xbuild writes self-contained .onnx files only")
    onnx.checker.check_model(proto, full_check=True)


def serialize(proto: onnx.ModelProto) -> bytes:
    return proto.SerializeToString(deterministic=True)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ``.onnx`` file, or raise one clean :class:`UserError` saying why it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the ONNX file: {exc.strerror}") from exc
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError) as exc:
        raise UserError(f"{path}: not an ONNX model (the file does not parse as an ONNX protobuf)") from exc
    if proto.ir_version <= 0 or not proto.graph.node:
        raise UserError(f"{path}: not an ONNX model (no IR version or no graph in it)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"{path}: invalid ONNX model: {str(exc).splitlines()[0]}") from exc
    return proto


def read_profile(metadata: Mapping[str, str], input_shape: Sequence[int | None]) -> BatchProfile | None:
    """The batch profile an ONNX file declares: its static batch, else its ``xbuild.batch_profile``."""
    if input_shape and isinstance(input_shape[0], int) and input_shape[0] > 0:
        return BatchProfile(input_shape[0], input_shape[0], input_shape[0])
    text = metadata.get(META_BATCH_PROFILE)
    return BatchProfile.parse(text) if text else None


def onnx_precision(proto: onnx.ModelProto) -> Precision:
    """``int8`` for a quantized (QDQ) graph, ``fp16`` when the weights are half precision, else
    ``fp32``: picks the pass rule."""
    from onnx import TensorProto

    types = {t.data_type for t in proto.graph.initializer}
    if TensorProto.INT8 in types and any(n.op_type == "DequantizeLinear" for n in proto.graph.node):
        return "int8"
    return "fp16" if TensorProto.FLOAT16 in types and TensorProto.FLOAT not in types else "fp32"


def metadata_of(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of an fp32 graph: fp16 weights and compute, fp32 input and output.

    TensorRT >= 11 has no FP16 builder flag; it builds FP16 only from a graph that is FP16 itself
    (a strongly typed network). Keeping the interface fp32 (a Cast at each end) means every runner
    and the comparator feed and read the same dtypes as for the fp32 file.
    """
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), init.name))
    for node in graph.node:
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float16")))
    for value in list(graph.input) + list(graph.output):
        _rename_uses(graph, value.name, value.name + "_fp16")
    casts_in = [helper.make_node("Cast", [v.name], [v.name + "_fp16"], to=TensorProto.FLOAT16,
                                 name=f"Cast_{v.name}_to_fp16") for v in graph.input]
    casts_out = [helper.make_node("Cast", [v.name + "_fp16"], [v.name], to=TensorProto.FLOAT,
                                  name=f"Cast_{v.name}_to_fp32") for v in graph.output]
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    set_metadata(out, {META_PRECISION: "fp16"})
    check(out)
    return out


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's torchvision-missing log lines and warnings; errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
