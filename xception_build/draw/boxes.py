"""What each box of a drawing says, worked out from the plan before anything is placed.

A box is one spec entry of a flow (or the head, or a flow's final activation): its spec path and
the file and line it is written at, the steps its block kind's ``diagram`` names, its parameters
and MACs, and the ``data-*`` attributes that carry the plan's numbers into the SVG. An entry that
repeats (``repeat: 3``) and a flow that repeats (the middle flow's ``repeat: 8``) are one box each,
never copied: the box counts its copies and the flow is framed with its repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..blocks import BLOCK_KINDS, Shape
from ..blocks.base import BlockDiagram, layer_label
from ..plan import FlowPlan, HeadPlan, PlannedBlock
from ..source import SpecSource
from ..summary import head_kind
from ..tables import cite, human_count


def hwc(shape: Shape) -> str:
    """The paper's way of writing a feature map: ``147x147x64`` (height x width x channels)."""
    return f"{shape.height}x{shape.width}x{shape.channels}"


@dataclass(frozen=True)
class Entry:
    """One spec entry of a flow, drawn once: the copies it plans to in the flow's first pass (its
    own ``repeat``) and in every pass together."""

    first_pass: tuple[PlannedBlock, ...]
    copies: tuple[PlannedBlock, ...]

    @property
    def spec_path(self) -> str:
        return self.first_pass[0].spec_path


def entries(blocks: Sequence[PlannedBlock], passes: int) -> list[Entry]:
    """The entries of a flow part in order; ``passes``: how many times its list runs."""
    per_pass = len(blocks) // passes
    runs: list[list[PlannedBlock]] = []
    for block in blocks[:per_pass]:
        if runs and runs[-1][0].spec_path == block.spec_path:
            runs[-1].append(block)
        else:
            runs.append([block])
    return [Entry(tuple(run), tuple(b for b in blocks if b.spec_path == run[0].spec_path)) for run in runs]


@dataclass(frozen=True)
class BoxContent:
    """A box's content before it has a place: what the layout measures, then positions."""

    role: Literal["block", "head", "final-act"]  # the SVG group's class
    spec_path: str
    cite: str
    badge: str
    diagram: BlockDiagram
    footer: tuple[str, ...]
    data: tuple[tuple[str, str], ...]
    tooltip: str


def _place_of(source: SpecSource | None, path: tuple[str | int, ...]) -> str:
    at = source.locations.get(path) if source is not None else None
    return cite(at.file, at.line, unknown="") if at is not None else ""


def _costs(entry: Entry) -> tuple[str, ...]:
    first = entry.copies[0]
    if len(entry.copies) == 1:
        return (f"{first.params:,} params · {human_count(first.macs)} MACs",)
    uniform = all((b.params, b.macs) == (first.params, first.macs) for b in entry.copies)
    params, macs = sum(b.params for b in entry.copies), sum(b.macs for b in entry.copies)
    return (f"{'each' if uniform else 'copy 1:'} {first.params:,} params · {human_count(first.macs)} MACs",
            f"all {len(entry.copies)}: {params:,} params · {human_count(macs)} MACs")


def block_box(entry: Entry) -> BoxContent:
    first, last = entry.first_pass[0], entry.first_pass[-1]
    place = cite(first.file, first.line, unknown=f"line {first.line}" if first.line else "")
    modules = [b.module_name for b in entry.copies]
    params, macs = sum(b.params for b in entry.copies), sum(b.macs for b in entry.copies)
    data = (("spec-path", entry.spec_path), ("file", first.file or ""), ("line", str(first.line or "")),
            ("kind", first.kind), ("flow", first.flow), ("repeat", str(len(entry.first_pass))),
            ("modules", " ".join(modules)), ("in", str(first.in_shape)), ("out", str(last.out_shape)),
            ("params", str(params)), ("macs", str(macs)))
    where = f" ({place})" if place else ""
    span = modules[0] if len(modules) == 1 else f"{len(modules)} modules, {modules[0]} ... {modules[-1]}"
    tooltip = (f"{entry.spec_path}{where}: {first.kind}, {span}\n"
               f"in {first.in_shape}, out {last.out_shape} (channels x height x width)\n"
               f"{params:,} parameters, {macs:,} MACs")
    badge = f"x {len(entry.first_pass)}" if len(entry.first_pass) > 1 else ""
    return BoxContent("block", entry.spec_path, place, badge, BLOCK_KINDS[first.kind].diagram(first.config),
                      _costs(entry), data, tooltip)


def final_act_box(flow: FlowPlan, activation: str, source: SpecSource | None) -> BoxContent:
    path = f"{flow.name}.final_act"
    return BoxContent("final-act", path, _place_of(source, (flow.name, "final_act")), "",
                      BlockDiagram(main=(layer_label(activation),)), ("0 params",),
                      (("flow", flow.name), ("activation", activation)),
                      f"{path}: the flow's {layer_label(activation)} after its last block")


def head_box(head: HeadPlan, features: Shape, source: SpecSource | None) -> BoxContent:
    steps = []
    if head.pool != "none":
        steps.append(f"Global {head.pool.capitalize()}Pool")
    if head.dropout:
        steps.append(f"Dropout {head.dropout:g}")
    if head.num_classes:
        steps.append(f"Linear {head.in_features} → {head.num_classes}")
    if not steps:
        steps.append("none: the feature map out")
    data = (("kind", head_kind(head.pool, head.num_classes)), ("pool", head.pool),
            ("num-classes", str(head.num_classes)), ("in", str(features)), ("params", str(head.params)),
            ("macs", str(head.macs)))
    return BoxContent("head", "head", _place_of(source, ("head",)), "", BlockDiagram(main=tuple(steps)),
                      (f"{head.params:,} params · {human_count(head.macs)} MACs",), data,
                      f"head: {head_kind(head.pool, head.num_classes)}, {head.params:,} parameters")


@dataclass(frozen=True)
class Carried:
    """What an arrow carries: its size as the ``data-shape`` attribute says it (the plan's
    channels x height x width), and as the label shows it."""

    data: str
    shown: str


def carried(shape: Shape) -> Carried:
    return Carried(str(shape), hwc(shape))


def network_output(head: HeadPlan, features: Shape) -> tuple[Carried, str]:
    """What the network puts out, and what to call it."""
    if head.pool == "none":
        return carried(features), "feature map"
    size = str(head.num_classes or head.in_features)
    return Carried(size, size), "logits" if head.num_classes else "features"


@dataclass(frozen=True)
class Frame:
    """A flow's repeat: ``x 8`` around the boxes of one pass."""

    repeat: int
    place: str  # where the repeat is written: "middle.repeat · xception.yaml:44"


def _repeat_place(flow: FlowPlan, source: SpecSource | None) -> str:
    place = _place_of(source, (flow.name, "repeat"))
    return f"{flow.name}.repeat · {place}" if place else f"{flow.name}.repeat"


Labelled = tuple[BoxContent, Carried]  # a box and what its outgoing arrow carries


@dataclass(frozen=True)
class FlowDrawing:
    """One column's content, before it is placed."""

    flow: FlowPlan
    stem: tuple[Labelled, ...]
    blocks: tuple[Labelled, ...]
    frame: Frame | None  # around the blocks, when the flow repeats
    final_act: BoxContent | None

    @property
    def boxes(self) -> list[BoxContent]:
        return [box for box, _ in (*self.stem, *self.blocks)] + ([self.final_act] if self.final_act else [])


def flow_drawing(flow: FlowPlan, source: SpecSource | None) -> FlowDrawing:
    stem = tuple((block_box(e), carried(e.first_pass[-1].out_shape)) for e in entries(flow.stem, 1))
    blocks = tuple((block_box(e), carried(e.first_pass[-1].out_shape)) for e in entries(flow.blocks, flow.repeat))
    frame = Frame(flow.repeat, _repeat_place(flow, source)) if flow.repeat > 1 and blocks else None
    final = final_act_box(flow, flow.final_activation, source) if flow.final_activation else None
    return FlowDrawing(flow, stem, blocks, frame, final)
