"""Resolved plan: the spec worked out into concrete blocks before any tensor exists.

Planning applies the defaults cascade, the width and depth multipliers and the repeats, and
infers every block's input and output shape, parameter count and MACs. It also applies the
spec's ``output_stride`` (strides past it become dilations, as in timm and DeepLab) and places
the multi-scale taps a backbone exposes (``feature_info``). An impossible spec
(spatial size reaching zero, an identity shortcut across a shape change, a network with no
layers) fails here with a ``SpecError`` pointing at the spec line, before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NoReturn

from .blocks import BlockSpecModel, BlockTap, Shape, kind_of
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
    file: str | None = None  # the file that line is in (a parent of an ``extends``, or "--set ...")
    stride: int = 1  # the stride it applies (after output_stride)
    dilation: int = 1


@dataclass(frozen=True)
class FeatureTap:
    """One multi-scale feature map of the network, as timm's ``feature_info`` lists it.

    Taps sit at the last module of each stride: where a downsampling block holds its last map at
    the resolution it was given (see the block kinds' ``BlockTap``), plus the network's output.
    ``owner`` is the module the map is read in (a block, a stem entry or a flow's ``final_act``)
    and ``inner`` the sub-module inside it ("" for the owner's own output)."""

    owner: str
    inner: str
    num_chs: int
    reduction: int
    shape: Shape
    spec_path: str

    @property
    def module(self) -> str:
        return f"{self.owner}.{self.inner}" if self.inner else self.owner


@dataclass(frozen=True)
class FlowPlan:
    name: str
    stem: tuple[PlannedBlock, ...]
    blocks: tuple[PlannedBlock, ...]
    final_activation: str | None
    repeat: int = 1  # how many times the block list runs (``repeat`` after ``scaling.depth``)


@dataclass(frozen=True)
class HeadPlan:
    in_features: int
    pool: str
    dropout: float
    num_classes: int

    @property
    def params(self) -> int:
        return self.in_features * self.num_classes + self.num_classes

    @property
    def macs(self) -> int:
        return self.in_features * self.num_classes


@dataclass(frozen=True)
class Plan:
    name: str
    input_shape: Shape
    flows: tuple[FlowPlan, ...]
    head: HeadPlan
    taps: tuple[FeatureTap, ...] = ()
    output_stride: int = 1  # the reduction the network reaches (capped by the spec's output_stride)

    @property
    def blocks(self) -> tuple[PlannedBlock, ...]:
        """Every planned module in forward order: stems, then blocks, flow by flow."""
        return tuple(b for flow in self.flows for b in (*flow.stem, *flow.blocks))

    @property
    def flow_blocks(self) -> tuple[PlannedBlock, ...]:
        """The flows' blocks without their stems, in forward order: the blocks weight files number."""
        return tuple(b for flow in self.flows for b in flow.blocks)

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


@dataclass
class _Walk:
    """What planning carries from block to block: the reduction so far, the dilation strides have
    turned into, the module that ran last, and the taps placed so far."""

    output_stride: int | None
    reduction: int = 1
    dilation: int = 1
    previous: str | None = None  # the module whose output the next block reads; None: the input
    previous_spec_path: str = ""
    taps: list[FeatureTap] = field(default_factory=list)

    def place(self, requested: int) -> tuple[int, int]:
        """The stride a block applies and the dilation of its convolutions (timm's rule: a block
        whose stride would pass ``output_stride`` runs unstrided at the current dilation, and
        every block after it dilates by that stride more)."""
        dilation = self.dilation
        if requested > 1 and self.output_stride and self.reduction * requested > self.output_stride:
            self.dilation *= requested
            return 1, dilation
        self.reduction *= requested
        return requested, dilation


class _BlockContext:
    """The PlanContext handed to a block kind: scaling, stride and dilation, errors located in the spec."""

    def __init__(self, spec: Spec, path: tuple[str | int, ...], stride: int = 1, dilation: int = 1,
                 reads_input: bool = False) -> None:
        self._spec = spec
        self._path = path
        self.spec_path = format_path(path)
        self.stride = stride
        self.dilation = dilation
        self.reads_input = reads_input

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


def _plan_flow(spec: Spec, name: str, shape: Shape, walk: _Walk) -> tuple[FlowPlan, Shape]:
    flow: FlowSpec = getattr(spec, name)
    flow_repeat = _check_block_count(spec, name, flow)
    planned: dict[str, list[PlannedBlock]] = {"stem": [], "blocks": []}
    copies_made: dict[tuple[str, int], int] = {}  # (part, index) -> copies planned so far
    for part, entries, copies_of_list in (("stem", flow.stem, 1), ("blocks", flow.blocks, flow_repeat)):
        for _ in range(copies_of_list):
            for index, entry in enumerate(entries):
                shape = _plan_entry(spec, name, part, index, entry, flow, shape, planned[part],
                                    copies_of_list, copies_made, walk)
    final = None
    if flow.final_act:
        final = resolve_options(spec.defaults, flow.defaults).activation
        final = None if final == "none" else final
        if final is not None and walk.previous is not None:
            walk.previous, walk.previous_spec_path = f"{name}.final_act", f"{name}.final_act"
    return FlowPlan(name, tuple(planned["stem"]), tuple(planned["blocks"]), final, flow_repeat), shape


def _plan_entry(spec: Spec, flow_name: str, part: str, index: int, entry: BlockSpecModel, flow: FlowSpec,
                shape: Shape, out: list[PlannedBlock], flow_copies: int,
                copies_made: dict[tuple[str, int], int], walk: _Walk) -> Shape:
    path = (flow_name, part, index)
    kind = kind_of(entry)
    options: ResolvedOptions = resolve_options(spec.defaults, flow.defaults, kind.options_layer(entry))
    repeat = entry.repeat
    copies = repeat * flow_copies
    location = _location(spec, path)
    requested = kind.stride_of(entry)
    for _ in range(repeat):
        reduction = walk.reduction
        stride, dilation = walk.place(requested)
        ctx = _BlockContext(spec, path, stride, dilation, reads_input=walk.previous is None)
        result = kind.plan(entry, options, shape, ctx)
        copies_made[(part, index)] = copy = copies_made.get((part, index), 0) + 1
        module_name = f"{flow_name}.{part}.{len(out)}"
        _place_tap(walk, result.tap, module_name, ctx.spec_path, shape, reduction)
        out.append(PlannedBlock(
            module_name=module_name, spec_path=ctx.spec_path, repeat=(copy, copies),
            flow=flow_name, kind=kind.name, in_shape=shape, out_shape=result.out_shape,
            params=result.params, macs=result.macs, config=result.config,
            line=location.line if location else None, file=location.file if location else None,
            stride=stride, dilation=dilation))
        walk.previous, walk.previous_spec_path = module_name, ctx.spec_path
        shape = result.out_shape
    return shape


def _place_tap(walk: _Walk, tap: BlockTap | None, module_name: str, spec_path: str, in_shape: Shape,
               reduction: int) -> None:
    """Record a block's tap; one at the block's input names the module that ran before it, and
    is left out when nothing did (it would be the network input itself)."""
    if tap is None:
        return
    owner, inner, path = module_name, tap.module, spec_path
    if not tap.module:
        if walk.previous is None:
            return
        owner, path = walk.previous, walk.previous_spec_path
    walk.taps.append(FeatureTap(owner, inner, tap.channels, reduction,
                                Shape(tap.channels, in_shape.height, in_shape.width), path))


def plan_spec(spec: Spec) -> Plan:
    """Work out every block's shapes and costs; raise ``SpecError`` for an impossible spec."""
    height, width = spec.input.height_width
    for what, value, path in (("input size", max(height, width), ("input", "size")),
                              ("input channels", spec.input.channels, ("input", "channels")),
                              ("num_classes", spec.head.num_classes, ("head", "num_classes"))):
        if value > MAX_DIMENSION:
            _fail_at(spec, path, f"{what} {value:,} is out of range: at most {MAX_DIMENSION:,}")
    shape = Shape(*spec.input.shape)
    input_shape = shape
    flows = []
    walk = _Walk(spec.output_stride)
    for name in FLOWS:
        flow_plan, shape = _plan_flow(spec, name, shape, walk)
        flows.append(flow_plan)
    if not any(flow.stem or flow.blocks for flow in flows):
        raise SpecError("the network has no layers: entry, middle and exit are all empty",
                        location=spec.source.root_location if spec.source else None)
    last = [b for flow in flows for b in (*flow.stem, *flow.blocks)][-1]
    taps = [*walk.taps, FeatureTap(last.module_name, "", shape.channels, walk.reduction, shape,
                                           last.spec_path)]
    head = spec.head
    head_plan = HeadPlan(shape.channels, head.pool, head.dropout, head.num_classes)
    return Plan(spec.name, input_shape, tuple(flows), head_plan, tuple(taps), walk.reduction)
