"""Block kind ``conv``: a plain convolution with optional norm and activation (the stems).

``layout`` orders ``conv``, ``norm`` and ``act`` (or a named activation); ``[conv]`` alone is a
bare convolution, as in the stem of timm's pre-activation ``xception41p``. ``padding`` is a count
(symmetric, as written), ``same`` (TensorFlow's rule) or ``symmetric``; unset, it follows the
``padding`` of the defaults (``symmetric``: ``kernel // 2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from ..activations import ActivationName, ActivationSetting
from ..options import BlockOptions, NormOverride, PaddingKind, ResolvedOptions
from .base import (
    BlockDiagram,
    BlockKind,
    BlockPlan,
    BlockSpecModel,
    BlockTap,
    PlanContext,
    Shape,
    check_range,
    conv_costs,
    layer_label,
    norm_params,
    strided,
    symmetric_padding,
)

if TYPE_CHECKING:
    from torch import nn

ConvLayoutToken = Literal["conv", "norm", "act", ActivationName]


class ConvBlockSpec(BlockSpecModel):
    kind: Literal["conv"] = "conv"
    out: int = Field(gt=0, description="output channels")
    kernel: int = Field(default=3, gt=0)
    stride: int = Field(default=1, gt=0)
    padding: Annotated[int, Field(ge=0)] | PaddingKind | None = Field(
        default=None, description="a count (symmetric), same or symmetric; default: the defaults' padding")
    bias: bool = False
    layout: list[ConvLayoutToken] = ["conv", "norm", "act"]
    activation: ActivationSetting | None = None
    norm: NormOverride | None = None

    @field_validator("layout")
    @classmethod
    def _one_conv(cls, tokens: list[str]) -> list[str]:
        if tokens.count("conv") != 1:
            raise ValueError(f"a conv layout needs exactly one 'conv', e.g. [conv, norm, act]; got {tokens}")
        if tokens.count("norm") > 1 or sum(t not in ("conv", "norm") for t in tokens) > 1:
            raise ValueError(f"a conv layout has at most one norm and one activation; got {tokens}")
        return tokens


@dataclass(frozen=True)
class ConvConfig:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int | str  # a count, or "same"
    dilation: int
    bias: bool
    ops: tuple[str, ...]  # "conv", "norm" or an activation name
    norm_eps: float
    norm_momentum: float


class ConvKind(BlockKind[ConvBlockSpec, ConvConfig]):
    name = "conv"
    spec_model = ConvBlockSpec

    def options_layer(self, spec: ConvBlockSpec) -> BlockOptions:
        padding = spec.padding if isinstance(spec.padding, str) else None
        return BlockOptions(activation=spec.activation, norm=spec.norm, padding=padding)

    def plan(self, spec: ConvBlockSpec, options: ResolvedOptions, in_shape: Shape, ctx: PlanContext) -> BlockPlan:
        check_range(ctx, "out", spec.out, "out channels")
        check_range(ctx, "kernel", spec.kernel, "kernel")
        check_range(ctx, "stride", spec.stride, "stride")
        if isinstance(spec.padding, int):  # at least 0 (ConvBlockSpec checks that)
            check_range(ctx, "padding", spec.padding, "padding")
        out_channels = ctx.scale_channels(spec.out)
        padding: int | str
        if isinstance(spec.padding, int):
            padding = spec.padding
        elif options.padding == "same":
            padding = "same"
        else:
            padding = symmetric_padding(spec.kernel, ctx.dilation)
        ops = tuple(options.activation if token == "act" else token for token in spec.layout)
        ops = tuple(op for op in ops if op != "none")
        out_shape, params, macs = conv_costs(in_shape, out_channels, spec.kernel, ctx.stride, padding,
                                             bias=spec.bias, dilation=ctx.dilation)
        if out_shape.height <= 0 or out_shape.width <= 0:
            ctx.fail(f"the input ({in_shape}) is too small for kernel {spec.kernel}, stride {spec.stride}, "
                     f"padding {padding}: the output would be {out_shape.height}x{out_shape.width}", "kernel")
        norm_at = ops.index("conv")
        norm_channels = [out_channels if i > norm_at else in_shape.channels
                         for i, op in enumerate(ops) if op == "norm"]
        params += sum(norm_params(c) for c in norm_channels)
        config = ConvConfig(in_shape.channels, out_channels, spec.kernel, ctx.stride, padding, ctx.dilation,
                            spec.bias, ops, options.norm_eps, options.norm_momentum)
        # A strided conv downsamples what it reads: its input is the last map at the old resolution.
        tap = BlockTap("", in_shape.channels) if spec.stride > 1 else None
        return BlockPlan(config, out_shape, params, macs, tap)

    def build(self, config: ConvConfig) -> nn.Module:

        from ..layers import NamedSequential, make_activation, make_conv, make_norm

        layers: list[tuple[str, nn.Module | None]] = []
        channels = config.in_channels
        after_conv = False
        for op in config.ops:
            if op == "conv":
                layers.append(("conv", make_conv(config.in_channels, config.out_channels, config.kernel,
                                                 config.stride, config.padding, config.dilation, bias=config.bias)))
                channels = config.out_channels
                after_conv = True
            elif op == "norm":
                layers.append(("norm", make_norm(channels, config.norm_eps, config.norm_momentum)))
            else:
                # In place only on the conv's own output: before it, the tensor is the caller's input.
                layers.append(("act", make_activation(op, inplace=after_conv)))
        return NamedSequential(layers)

    def diagram(self, config: ConvConfig) -> BlockDiagram:
        conv = strided(f"Conv {config.kernel}x{config.kernel}, {config.out_channels}", config.stride,
                       config.dilation)
        return BlockDiagram(main=(" · ".join(conv if op == "conv" else layer_label(op) for op in config.ops),))


CONV = ConvKind()
