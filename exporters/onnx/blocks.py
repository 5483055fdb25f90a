"""Where each spec block lives in an exported graph, so a verification can be made block by block.

At export time the dynamo exporter still knows, for every node, the module it came from (its
``name_scopes``); :func:`block_map` turns that into one entry per planned block -- its output
tensor and its nodes -- before the export strips node metadata for byte-identical files. The map
is stored in the file's ``xbuild.blocks`` metadata and survives the fp16 conversion and
quantization (both keep tensor and node names). :func:`with_block_outputs` makes the diagnostic
copy ``--explain`` runs: the same graph with every block output also a graph output.

``xbuild bench --blocks`` times the graph a runtime made of the file, whose nodes the runtime has
fused and renamed. :func:`tagged_copy` is its diagnostic copy: every node and tensor of a block
renamed with the block's tag, which the runtime's derived names keep (ONNX Runtime names a fused
node after one of its nodes or output tensors: ``b3~relu_1_nchwc``, ``b5~Conv_7_token_16``), and
:func:`attribute` gives each node of the runtime's graph to a block by that tag, or by the tensors
it reads and writes where the runtime made the node up (a layout ``Transpose``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import onnx

from exporters.contract import HEAD, META_BLOCKS


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


# ---------------------------------------------------------------------- attributing a runtime's graph

#: How a node of a runtime's graph was given to a block: named after one of the block's nodes or
#: tensors, or (a node the runtime made up) by the block that reads its output or else writes its input.
Attribution = Literal["name", "neighbour"]
_TAG = re.compile(r"b(\d+)~")  # anywhere in a name: runtimes prefix theirs (InsertedPrecisionFreeCast_b3~...)
#: How far the neighbour rule reaches from a node named after a block: an int8 file's
#: QuantizeLinear -> DequantizeLinear pair before a block's first QLinearConv is two nodes away.
NEIGHBOUR_HOPS = 2


@dataclass(frozen=True)
class GraphNode:
    """A node of the graph a runtime executes: its name, op type and the tensors it reads and writes."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def node_owners(proto: onnx.ModelProto, blocks: Sequence[BlockTensors], last_block: str) -> dict[str, str]:
    """Each node's owner: its block's module name, or :data:`HEAD` for the nodes after ``last_block``'s
    output (found only when the map locates ``last_block``, the network's last planned block).

    Other nodes outside the map (an int8 file's Q/DQ pairs between blocks) have none here."""
    owner = {name: b.module for b in blocks for name in b.nodes}
    last = next((b for b in blocks if b.module == last_block), None)
    if last is None:
        return owner
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [last.output]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.name not in owner:
                owner[node.name] = HEAD
                frontier += list(node.output)
    return owner


def tagged_copy(proto: onnx.ModelProto, owner: Mapping[str, str], owners: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` whose owned nodes and the tensors they write carry their owner's tag
    (``b{index in owners}~``); the graph's inputs and outputs keep their names. Renaming changes no
    computation; the caller checks that the runtime makes the same kernels of both."""
    tags = {name: f"b{index}~" for index, name in enumerate(owners)}
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    kept = {v.name for v in graph.output} | {v.name for v in graph.input}
    renames: dict[str, str] = {}
    for node in graph.node:
        if node.name in owner:
            tag = tags[owner[node.name]]
            renames.update({out: tag + out for out in node.output if out and out not in kept})
            node.name = tag + node.name
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in graph.value_info:
        value.name = renames.get(value.name, value.name)
    return copy


def tagged_owner(name: str, owners: Sequence[str]) -> str | None:
    """The owner a name's tag names (``None``: no tag)."""
    match = _TAG.search(name)
    return owners[int(match.group(1))] if match and int(match.group(1)) < len(owners) else None


def untagged(name: str) -> str:
    """The name without its tag, as the file spells it (for reports)."""
    return _TAG.sub("", name, count=1)


def attribute(nodes: Sequence[GraphNode], owners: Sequence[str]) -> dict[str, tuple[str, Attribution]]:
    """The owner of each node of a runtime's graph built from a :func:`tagged_copy`, and how it was found.

    A node whose name, or one of whose output tensors, carries a tag is its owner's. A node the runtime
    made up (a layout ``Transpose`` or ``Reorder``, a ``DequantizeLinear`` between blocks) goes to the
    one owner of the nodes that read its outputs, or else to the one owner of those that write its
    inputs, once they are known and at most :data:`NEIGHBOUR_HOPS` nodes from a named one; a node that
    reaches no single owner is left out (unattributed), never guessed."""
    found: dict[str, tuple[str, Attribution, int]] = {}  # name -> (owner, how, hops from a named node)
    for node in nodes:
        owner = tagged_owner(node.name, owners) or next(
            (o for o in (tagged_owner(t, owners) for t in node.outputs) if o is not None), None)
        if owner is not None:
            found[node.name] = (owner, "name", 0)
    writer = {t: node.name for node in nodes for t in node.outputs}
    readers: dict[str, list[str]] = {}
    for node in nodes:
        for t in node.inputs:
            readers.setdefault(t, []).append(node.name)

    def one_owner(names: list[str]) -> tuple[str, int] | None:
        if not names or not all(n in found for n in names):
            return None
        owners_of = {found[n][0] for n in names}
        hops = 1 + max(found[n][2] for n in names)
        return (owners_of.pop(), hops) if len(owners_of) == 1 and hops <= NEIGHBOUR_HOPS else None

    # Readers first: a node waits while some of its readers are unknown, unless nothing moves any more.
    patient = True
    while True:
        changed = False
        for node in nodes:
            if node.name in found:
                continue
            after = [r for t in node.outputs for r in readers.get(t, [])]
            reached = one_owner(after)
            if reached is None and (not patient or all(n in found for n in after)):
                reached = one_owner([writer[t] for t in node.inputs if t in writer])
            if reached is not None:
                found[node.name] = (reached[0], "neighbour", reached[1])
                changed = True
        if changed:
            patient = True
        elif patient:
            patient = False
        else:
            return {name: (owner, how) for name, (owner, how, _hops) in found.items()}
