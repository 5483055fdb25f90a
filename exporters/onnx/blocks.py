"""Where each spec block lives in an exported graph, so a verification can be made block by block.

At export time the dynamo exporter still knows, for every node, the module it came from (its
``name_scopes``); :func:`block_map` turns that into one entry per planned block -- its output
tensor and its nodes -- before the export strips node metadata for byte-identical files. The map
is stored in the file's ``xbuild.blocks`` metadata and survives the fp16 conversion and
quantization (both keep tensor and node names). :func:`with_block_outputs` makes the diagnostic
copy ``--explain`` runs: the same graph with every block output also a graph output.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import onnx

from exporters.contract import META_BLOCKS


@dataclass(frozen=True)
class BlockTensors:
    """One planned block in the graph: its module name, its output tensor and its nodes."""

    module: str
    output: str
    nodes: tuple[str, ...]


def _scopes(node: onnx.NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(prop.value)  # a list of strings, written by the exporter
            except (ValueError, SyntaxError):
                return []
            return [str(s) for s in value] if isinstance(value, list) else []
    return []


def block_map(proto: onnx.ModelProto, modules: Sequence[str]) -> list[BlockTensors]:
    """For each module name, the nodes exported from it and the tensor it hands to the rest of the graph.

    Call before node metadata is stripped; node names are those the graph has at that point.
    """
    graph = proto.graph
    wanted = set(modules)
    owner: dict[int, str] = {}
    for index, node in enumerate(graph.node):
        hits = [scope for scope in _scopes(node) if scope in wanted]
        if hits:
            owner[index] = hits[-1]  # the innermost planned module (blocks do not nest, stems neither)
    consumers: dict[str, set[str]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, set()).add(owner.get(index, ""))
    graph_outputs = {o.name for o in graph.output}
    blocks = []
    for module in modules:
        indices = [i for i, m in owner.items() if m == module]
        if not indices:
            continue
        produced = [out for i in sorted(indices) for out in graph.node[i].output]
        leaving = [t for t in produced if t in graph_outputs or consumers.get(t, set()) - {module}]
        if len(leaving) != 1:  # a block hands exactly one tensor on; anything else is not a block we know
            continue
        blocks.append(BlockTensors(module, leaving[0], tuple(graph.node[i].name for i in sorted(indices))))
    return blocks


def renamed(blocks: Sequence[BlockTensors], names: dict[str, str]) -> list[BlockTensors]:
    """The map after nodes were renamed (``names``: old -> new)."""
    return [BlockTensors(b.module, b.output, tuple(names.get(n, n) for n in b.nodes)) for b in blocks]


def encode(blocks: Sequence[BlockTensors]) -> str:
    return json.dumps([asdict(b) for b in blocks], separators=(",", ":"))


def read_blocks(proto: onnx.ModelProto) -> list[BlockTensors]:
    """The map an xbuild export recorded ([] for a file from elsewhere or an older xbuild)."""
    text = next((p.value for p in proto.metadata_props if p.key == META_BLOCKS), "")
    try:
        entries = json.loads(text) if text else []
        return [BlockTensors(str(e["module"]), str(e["output"]), tuple(str(n) for n in e["nodes"])) for e in entries]
    except (ValueError, KeyError, TypeError):
        return []


def observed_tensors(proto: onnx.ModelProto) -> dict[str, str]:
    """What the next block actually reads of each quantized tensor: in a quantized graph, its
    dequantized copy (the first one in node order, where a tensor is quantized more than once)."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    observed: dict[str, str] = {}
    for node in proto.graph.node:
        quant = producers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if quant is not None and quant.op_type == "QuantizeLinear":
            observed.setdefault(quant.input[0], node.output[0])
    return observed


def with_block_outputs(proto: onnx.ModelProto, blocks: Sequence[BlockTensors]) -> tuple[onnx.ModelProto, list[str]]:
    """A diagnostic copy of ``proto`` whose extra graph outputs are the blocks' outputs (never installed)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    observed = observed_tensors(copy)
    names = [observed.get(b.output, b.output) for b in blocks]
    inferred = onnx.shape_inference.infer_shapes(copy)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            elem_type = types.get(name) or onnx.TensorProto.FLOAT
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
            present.add(name)
    return copy, names
