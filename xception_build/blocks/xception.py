"""Block kind ``xception``: a stack of separable convolutions with a residual shortcut.

One kind covers the paper's blocks (timm ``legacy_xception``: ReLU -> SepConv -> BN, max-pool
stride), the aligned DeepLab modules (``xception41/65/71``: norm inside the SepConv, stride on the
last depthwise conv) and the pre-activation modules (``xception41p/65p``), through the options:

- ``out``: channels of each separable conv (a list), or one count with ``reps`` and ``grow_first``
- ``layout``: the order of ``dw``, ``pw``, ``norm`` and activations inside each separable conv
- ``shortcut``: ``conv_norm`` (1x1 conv + BN), ``conv``, ``identity`` or ``none`` (no residual)
- ``downsample``: ``maxpool`` after the stack, or ``depthwise`` (stride on the last dw conv)
- ``preact``: norm + activation on the block input, shared by both paths
- ``start_with_act``: false drops what the first separable conv's layout puts before its dw conv
- ``padding``: ``symmetric`` (PyTorch, timm) or ``same`` (TensorFlow, Keras) for its convs and pool

Under the spec's ``output_stride`` a block may lose its stride to a dilation; a projection
shortcut then left with nothing to match (same channels, stride 1) becomes an identity, as in
timm's aligned models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from ..options import BlockOptions, ResolvedOptions, SpecValueError
from .base import (
    MAX_REPS,
    BlockDiagram,
    BlockKind,
    BlockPlan,
    BlockSpecModel,
    BlockTap,
    PlanContext,
    Shape,
    check_range,
    conv_costs,
    conv_output_size,
    layer_label,
    norm_params,
    strided,
    symmetric_padding,
)

if TYPE_CHECKING:
    from torch import nn


class XceptionBlockSpec(BlockOptions, BlockSpecModel):
    kind: Literal["xception"] = "xception"
    out: int | list[int] = Field(description="channels of each separable conv, or one count with reps")
    reps: int | None = Field(default=None, gt=0, description="number of separable convs")
    stride: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _channels_and_reps(self) -> XceptionBlockSpec:
        """``out`` and ``reps`` agree. Checked with the rest of the spec, so that a spec with
        several such mistakes reports them all at once, not one per planning attempt."""
        if isinstance(self.out, list):
            if not self.out:
                raise SpecValueError("'out' lists no channels", ("out",))
            if any(c <= 0 for c in self.out):
                raise SpecValueError(f"channel counts must be positive, got {self.out}", ("out",))
            if len(self.out) > MAX_REPS:
                raise SpecValueError(f"separable convs listed in out: {len(self.out):,} is out of range: "
                                     f"at most {MAX_REPS:,}", ("out",))
            if self.reps is not None and self.reps != len(self.out):
                raise SpecValueError(f"reps is {self.reps} but 'out' lists {len(self.out)} channel counts",
                                     ("reps",), hint="drop reps when out is a list; its length is the number "
                                                     "of separable convs")
            return self
        if self.out <= 0:
            raise SpecValueError(f"channel count must be positive, got {self.out}", ("out",))
        if self.reps is None:
            raise SpecValueError("reps is required when out is a single channel count", ("reps",),
                                 hint="e.g. {out: 728, reps: 3}, or list the channels: {out: [728, 1024, 1024]}")
        return self


@dataclass(frozen=True)
class SepConvConfig:
    in_channels: int
    out_channels: int
    stride: int  # of the depthwise conv
    ops: tuple[str, ...]  # "dw", "pw", "norm" or an activation name
    first_in_block: bool


@dataclass(frozen=True)
class XceptionConfig:
    in_channels: int
    out_channels: int
    stride: int
    convs: tuple[SepConvConfig, ...]
    pool_stride: int  # 0: no max-pool (1: a stride turned into a dilation keeps its pool, unstrided)
    preact_activation: str | None  # None: no pre-activation
    shortcut: str
    norm_eps: float
    norm_momentum: float
    padding: int | str = 1  # of its 3x3 convs and pool: a count (the dilation), or "same"
    dilation: int = 1
    inplace_add: bool = False


def _tap(convs: list[SepConvConfig], maxpool: bool, preact: bool) -> BlockTap:
    """Where the block's last map at its input resolution is read (timm's placement): at the
    start of the part that downsamples (the whole block for a max-pool, the strided separable
    conv otherwise), after the activation that opens it if one does (a rectified map), else at
    its input."""
    block_input = convs[0].in_channels
    if maxpool and preact:
        return BlockTap("", block_input)
    index = 0 if maxpool else len(convs) - 1
    conv = convs[index]
    if conv.ops[0] not in ("dw", "norm"):  # opens with an activation
        return BlockTap(f"main.sep{index + 1}.pre_act", conv.in_channels)
    if index > 0:
        return BlockTap(f"main.sep{index}", conv.in_channels)
    return BlockTap("preact" if preact else "", block_input)


def _channel_list(spec: XceptionBlockSpec, options: ResolvedOptions, in_channels: int,
                  ctx: PlanContext) -> list[int]:
    # out and reps agree (XceptionBlockSpec checks that); what is left depends on the limits
    if isinstance(spec.out, list):
        check_range(ctx, "out", max(spec.out), "out channels")
        return [ctx.scale_channels(c) for c in spec.out]
    assert spec.reps is not None
    check_range(ctx, "out", spec.out, "out channels")
    check_range(ctx, "reps", spec.reps, "reps", MAX_REPS)
    out = ctx.scale_channels(spec.out)
    if options.grow_first:
        return [out] * spec.reps
    return [in_channels] * (spec.reps - 1) + [out]


def _plan(spec: XceptionBlockSpec, options: ResolvedOptions, in_shape: Shape, ctx: PlanContext) -> BlockPlan:
    check_range(ctx, "stride", spec.stride, "stride")
    channels = _channel_list(spec, options, in_shape.channels, ctx)
    depthwise_stride = options.downsample == "depthwise"
    stride, dilation = ctx.stride, ctx.dilation
    padding: int | str = "same" if options.padding == "same" else symmetric_padding(3, dilation)
    params, macs = 0, 0
    shape = in_shape
    if options.preact:
        params += norm_params(in_shape.channels)
    convs: list[SepConvConfig] = []
    for index, out_channels in enumerate(channels):
        tokens = list(options.layout)
        if index == 0 and not options.start_with_act:
            tokens = tokens[tokens.index("dw"):]
        ops = tuple(op for op in (options.activation if t == "act" else t for t in tokens) if op != "none")
        conv_stride = stride if depthwise_stride and index == len(channels) - 1 else 1
        in_channels = shape.channels
        dw_shape, dw_params, dw_macs = conv_costs(shape, in_channels, 3, conv_stride, padding, groups=in_channels,
                                                  dilation=dilation)
        pw_shape, pw_params, pw_macs = conv_costs(dw_shape, out_channels, 1, 1, 0)
        pw_at = ops.index("pw")
        for position, op in enumerate(ops):
            if op == "norm":
                params += norm_params(out_channels if position > pw_at else in_channels)
        params += dw_params + pw_params
        macs += dw_macs + pw_macs
        convs.append(SepConvConfig(in_channels, out_channels, conv_stride, ops, index == 0))
        shape = pw_shape
    pool_stride = 0
    if spec.stride != 1 and not depthwise_stride:
        pool_stride = stride
        shape = Shape(shape.channels, conv_output_size(shape.height, 3, stride, padding, dilation),
                      conv_output_size(shape.width, 3, stride, padding, dilation))
    if shape.height <= 0 or shape.width <= 0:
        ctx.fail(f"the input ({in_shape}) is too small: the output would be {shape.height}x{shape.width}", "stride")

    shortcut = options.shortcut
    if (shortcut in ("conv", "conv_norm") and stride == 1 and spec.stride != 1
            and in_shape.channels == shape.channels):
        shortcut = "identity"  # the stride became a dilation: nothing left for the projection to match
    if shortcut == "identity" and (in_shape.channels != shape.channels or stride != 1):
        ctx.fail(f"an identity shortcut needs the same shape in and out, but this block maps {in_shape} "
                 f"to {shape}", "shortcut", hint="use shortcut: conv_norm or conv (a 1x1 projection), or none")
    if shortcut in ("conv", "conv_norm"):
        _, sc_params, sc_macs = conv_costs(in_shape, shape.channels, 1, stride, 0)
        params += sc_params + (norm_params(shape.channels) if shortcut == "conv_norm" else 0)
        macs += sc_macs
    # The add may write into the main path's output unless autograd keeps that output (it ends in
    # an activation) or the two sides may differ in dtype under autocast: an identity shortcut of
    # the network input itself (float32) against a main path of autocast convolutions.
    ends_with_act = pool_stride == 0 and convs[-1].ops[-1] not in ("pw", "norm")
    inplace_add = not ends_with_act and not (shortcut == "identity" and ctx.reads_input)
    config = XceptionConfig(
        in_channels=in_shape.channels, out_channels=shape.channels, stride=stride, convs=tuple(convs),
        pool_stride=pool_stride, preact_activation=options.activation if options.preact else None,
        shortcut=shortcut, norm_eps=options.norm_eps, norm_momentum=options.norm_momentum,
        padding=padding, dilation=dilation, inplace_add=inplace_add)
    tap = _tap(convs, not depthwise_stride, options.preact) if spec.stride != 1 else None
    return BlockPlan(config, shape, params, macs, tap)


_SLOTS = ("pre", "dw", "pw")  # what comes before dw, between dw and pw, after pw


def _build_separable(conv: SepConvConfig, config: XceptionConfig, reads_block_input: bool) -> nn.Module:

    from ..layers import NamedSequential, make_activation, make_conv, make_norm

    layers: list[tuple[str, nn.Module | None]] = []
    slot, channels = 0, conv.in_channels
    for op in conv.ops:
        if op == "dw":
            layers.append(("dw", make_conv(channels, channels, 3, conv.stride, config.padding, config.dilation,
                                           groups=channels)))
            slot = 1
        elif op == "pw":
            layers.append(("pw", make_conv(channels, conv.out_channels, 1, 1, 0)))
            slot, channels = 2, conv.out_channels
        elif op == "norm":
            layers.append((f"{_SLOTS[slot]}_norm", make_norm(channels, config.norm_eps, config.norm_momentum)))
        else:
            # Not in place where it would overwrite the block input the shortcut still reads.
            inplace = not (reads_block_input and slot == 0)
            layers.append((f"{_SLOTS[slot]}_act", make_activation(op, inplace=inplace)))
    return NamedSequential(layers)


def _build(config: XceptionConfig) -> nn.Module:
    from torch import nn

    from ..layers import NamedSequential, ResidualBlock, make_activation, make_max_pool, make_norm

    main: list[tuple[str, nn.Module | None]] = [
        (f"sep{i + 1}", _build_separable(conv, config, reads_block_input=conv.first_in_block))
        for i, conv in enumerate(config.convs)]
    if config.pool_stride:
        main.append(("pool", make_max_pool(3, config.pool_stride, config.padding, config.dilation)))
    preact = None
    if config.preact_activation is not None:
        preact = NamedSequential([
            ("norm", make_norm(config.in_channels, config.norm_eps, config.norm_momentum)),
            ("act", make_activation(config.preact_activation, inplace=True)),
        ])
    shortcut: nn.Module | None
    if config.shortcut == "none":
        shortcut = None
    elif config.shortcut == "identity":
        shortcut = nn.Identity()
    else:
        conv = nn.Conv2d(config.in_channels, config.out_channels, 1, config.stride, bias=False)
        shortcut = conv if config.shortcut == "conv" else NamedSequential([
            ("conv", conv), ("norm", make_norm(config.out_channels, config.norm_eps, config.norm_momentum))])
    return ResidualBlock(NamedSequential(main), shortcut, preact, inplace=config.inplace_add)


def _separable_label(conv: SepConvConfig, dilation: int) -> str:
    """One separable conv as the paper's boxes read: ``ReLU · SepConv 3x3, 256 · BN``; a layout
    with a layer between the depthwise and the pointwise conv names the two apart
    (``ReLU · DW 3x3 · BN · PW 1x1, 728 · BN``)."""
    labels: list[str] = []
    ops = list(conv.ops)
    for position, op in enumerate(ops):
        if op == "dw" and position + 1 < len(ops) and ops[position + 1] == "pw":
            labels.append(strided(f"SepConv 3x3, {conv.out_channels}", conv.stride, dilation))
        elif op == "dw":
            labels.append(strided("DW 3x3", conv.stride, dilation))
        elif op == "pw" and position > 0 and ops[position - 1] == "dw":
            continue  # drawn with its depthwise conv
        elif op == "pw":
            labels.append(f"PW 1x1, {conv.out_channels}")
        else:
            labels.append(layer_label(op))
    return " · ".join(labels)


def _diagram(config: XceptionConfig) -> BlockDiagram:
    main = [_separable_label(conv, config.dilation) for conv in config.convs]
    if config.pool_stride:
        main.append(strided("MaxPool 3x3", config.pool_stride, config.dilation))
    shared: tuple[str, ...] = ()
    if config.preact_activation is not None:
        shared = (f"BN · {layer_label(config.preact_activation)}",)
    if config.shortcut in ("conv", "conv_norm"):
        projection = [f"Conv 1x1, {config.out_channels}"]
        if config.stride > 1:
            projection.append(f"stride {config.stride}")
        if config.shortcut == "conv_norm":
            projection.append("BN")
        return BlockDiagram(tuple(main), shared, "projection", tuple(projection))
    return BlockDiagram(tuple(main), shared, "identity" if config.shortcut == "identity" else "none")


class XceptionKind(BlockKind[XceptionBlockSpec, XceptionConfig]):
    name = "xception"
    spec_model = XceptionBlockSpec

    def plan(self, spec: XceptionBlockSpec, options: ResolvedOptions, in_shape: Shape,
             ctx: PlanContext) -> BlockPlan:
        return _plan(spec, options, in_shape, ctx)

    def build(self, config: XceptionConfig) -> nn.Module:
        return _build(config)

    def diagram(self, config: XceptionConfig) -> BlockDiagram:
        return _diagram(config)


XCEPTION = XceptionKind()
