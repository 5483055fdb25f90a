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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..options import BlockOptions, ResolvedOptions
from .base import (
    MAX_REPS,
    BlockKind,
    BlockPlan,
    BlockSpecModel,
    PlanContext,
    Shape,
    check_range,
    conv_costs,
    norm_params,
)

if TYPE_CHECKING:
    from torch import nn


class XceptionBlockSpec(BlockOptions, BlockSpecModel):
    kind: Literal["xception"] = "xception"
    out: int | list[int] = Field(description="channels of each separable conv, or one count with reps")
    reps: int | None = Field(default=None, gt=0, description="number of separable convs")
    stride: int = Field(default=1, gt=0)


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
    pool_stride: int  # 1: no max-pool
    preact_activation: str | None  # None: no pre-activation
    shortcut: str
    norm_eps: float
    norm_momentum: float


def _channel_list(spec: XceptionBlockSpec, options: ResolvedOptions, in_channels: int,
                  ctx: PlanContext) -> list[int]:
    if isinstance(spec.out, list):
        if not spec.out:
            ctx.fail("'out' lists no channels", "out")
        if any(c <= 0 for c in spec.out):
            ctx.fail(f"channel counts must be positive, got {spec.out}", "out")
        check_range(ctx, "out", max(spec.out), "out channels")
        check_range(ctx, "out", len(spec.out), "separable convs listed in out:", MAX_REPS)
        if spec.reps is not None and spec.reps != len(spec.out):
            ctx.fail(f"reps is {spec.reps} but 'out' lists {len(spec.out)} channel counts", "reps",
                     hint="drop reps when out is a list; its length is the number of separable convs")
        return [ctx.scale_channels(c) for c in spec.out]
    if spec.out <= 0:
        ctx.fail(f"channel count must be positive, got {spec.out}", "out")
    check_range(ctx, "out", spec.out, "out channels")
    if spec.reps is None:
        ctx.fail("reps is required when out is a single channel count", "reps",
                 hint="e.g. {out: 728, reps: 3}, or list the channels: {out: [728, 1024, 1024]}")
    check_range(ctx, "reps", spec.reps, "reps", MAX_REPS)
    out = ctx.scale_channels(spec.out)
    if options.grow_first:
        return [out] * spec.reps
    return [in_channels] * (spec.reps - 1) + [out]


def _plan(spec: XceptionBlockSpec, options: ResolvedOptions, in_shape: Shape, ctx: PlanContext) -> BlockPlan:
    check_range(ctx, "stride", spec.stride, "stride")
    channels = _channel_list(spec, options, in_shape.channels, ctx)
    depthwise_stride = options.downsample == "depthwise"
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
        stride = spec.stride if depthwise_stride and index == len(channels) - 1 else 1
        in_channels = shape.channels
        dw_shape, dw_params, dw_macs = conv_costs(shape, in_channels, 3, stride, 1, groups=in_channels)
        pw_shape, pw_params, pw_macs = conv_costs(dw_shape, out_channels, 1, 1, 0)
        pw_at = ops.index("pw")
        for position, op in enumerate(ops):
            if op == "norm":
                params += norm_params(out_channels if position > pw_at else in_channels)
        params += dw_params + pw_params
        macs += dw_macs + pw_macs
        convs.append(SepConvConfig(in_channels, out_channels, stride, ops, index == 0))
        shape = pw_shape
    pool_stride = 1
    if spec.stride != 1 and not depthwise_stride:
        pool_stride = spec.stride
        shape = Shape(shape.channels, (shape.height - 1) // spec.stride + 1, (shape.width - 1) // spec.stride + 1)
    if shape.height <= 0 or shape.width <= 0:
        ctx.fail(f"the input ({in_shape}) is too small: the output would be {shape.height}x{shape.width}", "stride")

    shortcut = options.shortcut
    if shortcut == "identity" and (in_shape.channels != shape.channels or spec.stride != 1):
        ctx.fail(f"an identity shortcut needs the same shape in and out, but this block maps {in_shape} "
                 f"to {shape}", "shortcut", hint="use shortcut: conv_norm or conv (a 1x1 projection), or none")
    if shortcut in ("conv", "conv_norm"):
        _, sc_params, sc_macs = conv_costs(in_shape, shape.channels, 1, spec.stride, 0)
        params += sc_params + (norm_params(shape.channels) if shortcut == "conv_norm" else 0)
        macs += sc_macs
    config = XceptionConfig(
        in_channels=in_shape.channels, out_channels=shape.channels, stride=spec.stride, convs=tuple(convs),
        pool_stride=pool_stride, preact_activation=options.activation if options.preact else None,
        shortcut=shortcut, norm_eps=options.norm_eps, norm_momentum=options.norm_momentum)
    return BlockPlan(config, shape, params, macs)


_SLOTS = ("pre", "dw", "pw")  # what comes before dw, between dw and pw, after pw


def _build_separable(conv: SepConvConfig, config: XceptionConfig, reads_block_input: bool) -> nn.Module:
    from torch import nn

    from ..layers import NamedSequential, make_activation, make_norm

    layers: list[tuple[str, nn.Module | None]] = []
    slot, channels = 0, conv.in_channels
    for op in conv.ops:
        if op == "dw":
            layers.append(("dw", nn.Conv2d(channels, channels, 3, conv.stride, 1, groups=channels, bias=False)))
            slot = 1
        elif op == "pw":
            layers.append(("pw", nn.Conv2d(channels, conv.out_channels, 1, bias=False)))
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

    from ..layers import NamedSequential, ResidualBlock, make_activation, make_norm

    main: list[tuple[str, nn.Module | None]] = [
        (f"sep{i + 1}", _build_separable(conv, config, reads_block_input=conv.first_in_block))
        for i, conv in enumerate(config.convs)]
    if config.pool_stride != 1:
        main.append(("pool", nn.MaxPool2d(3, config.pool_stride, 1)))
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
    return ResidualBlock(NamedSequential(main), shortcut, preact)


class XceptionKind(BlockKind[XceptionBlockSpec, XceptionConfig]):
    name = "xception"
    spec_model = XceptionBlockSpec

    def plan(self, spec: XceptionBlockSpec, options: ResolvedOptions, in_shape: Shape,
             ctx: PlanContext) -> BlockPlan:
        return _plan(spec, options, in_shape, ctx)

    def build(self, config: XceptionConfig) -> nn.Module:
        return _build(config)


XCEPTION = XceptionKind()
