"""Resolved plan: the spec worked out into concrete blocks before any tensor exists.

Planning applies the defaults cascade, the width and depth multipliers and the repeats, and
infers every block's input and output shape, parameter count and MACs. An impossible spec
(spatial size reaching zero, an identity shortcut across a shape change, a network with no
layers) fails here with a ``SpecError`` pointing at the spec line, before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NoReturn

from .blocks import BlockSpecModel, Shape, kind_of
from .blocks.base import MAX_DIMENSION
from .errors import Location, SpecError
from .options import ResolvedOptions, resolve_options
from .source import format_path
from .spec import FLOWS, FlowSpec, Spec


@dataclass(frozen=True)
class PlannedBlock:
    """One module of the network, with where it came from in the spec."""

    module_name: str  # e.g. "middle.blocks.5": the name in model.named_modules()
    spec_path: str  # e.g. "middle.blocks[0]": the spec entry it was built from
    repeat: tuple[int, int]  # (copy, of copies): (6, 8) for the 6th of 8 repeats
    flow: str
    kind: str
    in_shape: Shape
    out_shape: Shape
    params: int
    macs: int
    config: object  # the kind's own build config (BLOCK_KINDS[kind].build takes it)
    line: int | None  # line of the spec entry, when known


@dataclass(frozen=True)
class FlowPlan:
    name: str
    stem: tuple[PlannedBlock, ...]
    blocks: tuple[PlannedBlock, ...]
    final_activation: str | None


@dataclass(frozen=True)
class HeadPlan:
    in_features: int
    pool: str
    dropout: float
    num_classes: int
    params: int
    macs: int


@dataclass(frozen=True)
class Plan:
    name: str
    input_shape: Shape
    flows: tuple[FlowPlan, ...]
    head: HeadPlan

    @property
    def blocks(self) -> tuple[PlannedBlock, ...]:
        """Every planned module in forward order: stems, then blocks, flow by flow."""
        return tuple(b for flow in self.flows for b in (*flow.stem, *flow.blocks))

    @property
    def feature_shape(self) -> Shape:
        return self.blocks[-1].out_shape

    @property
    def num_features(self) -> int:
        return self.feature_shape.channels

    @property
    def total_params(self) -> int:
        return sum(b.params for b in self.blocks) + self.head.params

    @property
    def total_macs(self) -> int:
        return sum(b.macs for b in self.blocks) + self.head.macs


def make_divisible(value: float, divisor: int) -> int:
    """Round to a multiple of ``divisor`` without losing more than 10 % (timm's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class _BlockContext:
    """The PlanContext handed to a block kind: scaling and errors located in the spec."""

    def __init__(self, spec: Spec, path: tuple[str | int, ...]) -> None:
        self._spec = spec
        self._path = path
        self.spec_path = format_path(path)

    def scale_channels(self, channels: int) -> int:
        scaling = self._spec.scaling
        if scaling.width == 1.0:
            return channels
        scaled = channels * scaling.width
        if not math.isfinite(scaled) or scaled > MAX_DIMENSION:
            _fail_at(self._spec, ("scaling", "width"), f"width {scaling.width} times {channels:,} channels "
                     f"is out of range: at most {MAX_DIMENSION:,} channels")
        if scaling.divisor > MAX_DIMENSION:
            _fail_at(self._spec, ("scaling", "divisor"),
                     f"divisor {scaling.divisor:,} is out of range: at most {MAX_DIMENSION:,}")
        return make_divisible(scaled, scaling.divisor)

    def fail(self, message: str, field: str | None = None, hint: str | None = None) -> NoReturn:
        _fail_at(self._spec, (*self._path, field) if field else self._path, message, hint)


def _location(spec: Spec, path: tuple[str | int, ...]) -> Location | None:
    return spec.source.location_of(path) if spec.source else None


# Far beyond any real network (the shipped specs have at most 16 blocks in a flow): a guard
# against a mistyped count (repeat: 80000000) that would otherwise make planning run for hours.
MAX_BLOCKS_PER_FLOW = 1_000


def _fail_at(spec: Spec, path: tuple[str | int, ...], message: str, hint: str | None = None) -> NoReturn:
    raise SpecError(message, location=_location(spec, path), spec_path=format_path(path), hint=hint)


def _check_block_count(spec: Spec, name: str, flow: FlowSpec) -> int:
    """The flow's repeat after depth scaling, once the number of blocks it makes is sane."""
    too_many = f"more than {MAX_BLOCKS_PER_FLOW:,} blocks in the {name} flow, the most a spec may have"
    for part, entries in (("stem", flow.stem), ("blocks", flow.blocks)):
        for index, entry in enumerate(entries):
            repeat = entry.repeat
            if repeat > MAX_BLOCKS_PER_FLOW:
                _fail_at(spec, (name, part, index, "repeat"), f"repeat {repeat:,} would make {too_many}")
    flow_repeat = flow.repeat
    if name == "middle" and spec.scaling.depth != 1.0:
        scaled = flow.repeat * spec.scaling.depth
        if not math.isfinite(scaled) or scaled > MAX_BLOCKS_PER_FLOW:
            _fail_at(spec, ("scaling", "depth"), f"depth {spec.scaling.depth} times middle.repeat "
                     f"{flow.repeat} would make {too_many}")
        flow_repeat = max(1, math.ceil(scaled))
    stems = sum(entry.repeat for entry in flow.stem)
    if stems > MAX_BLOCKS_PER_FLOW:
        _fail_at(spec, (name, "stem"), f"{stems:,} stem layers would make {too_many}")
    count = flow_repeat * sum(entry.repeat for entry in flow.blocks)
    if stems + count > MAX_BLOCKS_PER_FLOW:
        _fail_at(spec, (name, "repeat"), f"repeat {flow_repeat:,} of {count // flow_repeat:,} block(s)"
                 + (f" after {stems:,} stem layers" if stems else "") + f" would make {too_many}")
    return flow_repeat


def _plan_flow(spec: Spec, name: str, shape: Shape) -> tuple[FlowPlan, Shape]:
    flow: FlowSpec = getattr(spec, name)
    flow_repeat = _check_block_count(spec, name, flow)
    planned: dict[str, list[PlannedBlock]] = {"stem": [], "blocks": []}
    copies_made: dict[tuple[str, int], int] = {}  # (part, index) -> copies planned so far
    for part, entries, copies_of_list in (("stem", flow.stem, 1), ("blocks", flow.blocks, flow_repeat)):
        for _ in range(copies_of_list):
            for index, entry in enumerate(entries):
                shape = _plan_entry(spec, name, part, index, entry, flow, shape, planned[part],
                                    copies_of_list, copies_made)
    final = None
    if flow.final_act:
        final = resolve_options(spec.defaults, flow.defaults).activation
        final = None if final == "none" else final
    return FlowPlan(name, tuple(planned["stem"]), tuple(planned["blocks"]), final), shape


def _plan_entry(spec: Spec, flow_name: str, part: str, index: int, entry: BlockSpecModel, flow: FlowSpec,
                shape: Shape, out: list[PlannedBlock], flow_copies: int,
                copies_made: dict[tuple[str, int], int]) -> Shape:
    path = (flow_name, part, index)
    kind = kind_of(entry)
    options: ResolvedOptions = resolve_options(spec.defaults, flow.defaults, kind.options_layer(entry))
    repeat = entry.repeat
    copies = repeat * flow_copies
    ctx = _BlockContext(spec, path)
    location = _location(spec, path)
    for _ in range(repeat):
        result = kind.plan(entry, options, shape, ctx)
        copies_made[(part, index)] = copy = copies_made.get((part, index), 0) + 1
        out.append(PlannedBlock(
            module_name=f"{flow_name}.{part}.{len(out)}", spec_path=ctx.spec_path, repeat=(copy, copies),
            flow=flow_name, kind=kind.name, in_shape=shape, out_shape=result.out_shape,
            params=result.params, macs=result.macs, config=result.config,
            line=location.line if location else None))
        shape = result.out_shape
    return shape


def plan_spec(spec: Spec) -> Plan:
    """Work out every block's shapes and costs; raise ``SpecError`` for an impossible spec."""
    height, width = spec.input.height_width
    for what, value, path in (("input size", max(height, width), ("input", "size")),
                              ("input channels", spec.input.channels, ("input", "channels")),
                              ("num_classes", spec.head.num_classes, ("head", "num_classes"))):
        if value > MAX_DIMENSION:
            _fail_at(spec, path, f"{what} {value:,} is out of range: at most {MAX_DIMENSION:,}")
    shape = Shape(spec.input.channels, height, width)
    input_shape = shape
    flows = []
    for name in FLOWS:
        flow_plan, shape = _plan_flow(spec, name, shape)
        flows.append(flow_plan)
    if not any(flow.stem or flow.blocks for flow in flows):
        raise SpecError("the network has no layers: entry, middle and exit are all empty",
                        location=spec.source.root_location if spec.source else None)
    head = spec.head
    head_params = shape.channels * head.num_classes + head.num_classes
    head_plan = HeadPlan(shape.channels, head.pool, head.dropout, head.num_classes, head_params,
                         shape.channels * head.num_classes)
    return Plan(spec.name, input_shape, tuple(flows), head_plan)
