"""What every block kind provides, and the arithmetic they share (shapes, parameters, MACs).

A block kind is one file under ``xception_build/blocks/``: a :class:`BlockKind` object with its
spec schema (a pydantic model), a ``plan`` step that works out channels, shapes, parameters and
MACs with no tensors, a ``build`` step that turns that plan into modules, and a ``diagram`` step
that says how ``xbuild draw`` pictures it. Listing the object
in ``blocks/__init__.py`` is all it takes for specs (stems and blocks alike), the planner and the
builder to know it. torch is imported only by ``build``, so specs validate and plan without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, NoReturn, Protocol, TypeVar

from pydantic import Field

from ..activations import ACTIVATIONS
from ..options import BlockOptions, ResolvedOptions, StrictModel

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Shape:
    """Channels, height, width of one image's activation."""

    channels: int
    height: int
    width: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def __str__(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}"


@dataclass(frozen=True)
class BlockTap:
    """Where a downsampling block holds its last feature map at the resolution it was given.

    ``module`` names a sub-module of the block (``main.sep3.pre_act``) whose output that map
    is, or is ``""`` for the block's input (the output of whatever ran before it). The planner
    turns these into the network's multi-scale taps (``feature_info``)."""

    module: str
    channels: int


@dataclass(frozen=True)
class BlockPlan:
    """A block kind's answer to planning: its build config and its static costs."""

    config: object  # a frozen dataclass of the kind's own; its `build` receives it back
    out_shape: Shape
    params: int
    macs: int
    tap: BlockTap | None = None  # set by blocks whose spec asks for a stride


@dataclass(frozen=True)
class BlockDiagram:
    """A planned block as a picture shows it (``xbuild draw``), in the words of the Xception paper's
    figure: one step per box of the main path (``ReLU · SepConv 3x3, 256 · BN``), the steps both
    paths share before the shortcut branches off (a pre-activation), and the residual shortcut:
    none, an identity, or a projection whose layers are listed one per line."""

    main: tuple[str, ...]
    shared: tuple[str, ...] = ()
    residual: Literal["none", "identity", "projection"] = "none"
    projection: tuple[str, ...] = ()


class PlanContext(Protocol):
    """What the planner offers a block kind while it plans one block.

    ``stride`` is the stride the block applies: its own, or 1 where the spec's ``output_stride``
    turned it into a dilation. ``dilation`` is what the block's convolutions (and pools) dilate
    by. ``reads_input`` is true for a block that reads the network input itself."""

    spec_path: str
    stride: int
    dilation: int
    reads_input: bool

    def scale_channels(self, channels: int) -> int: ...

    def fail(self, message: str, field: str | None = None, hint: str | None = None) -> NoReturn: ...


class BlockSpecModel(StrictModel):
    """What every kind's spec model has besides its own fields: ``kind`` (each model narrows it to
    ``Literal["<name>"]``) and ``repeat``."""

    kind: str
    repeat: int = Field(default=1, gt=0, description="identical copies of this entry in a row")


SpecT = TypeVar("SpecT", bound=BlockSpecModel)
ConfigT = TypeVar("ConfigT")


class BlockKind(ABC, Generic[SpecT, ConfigT]):
    """One kind of block: ``kind: <name>`` in a spec. Subclass it in one file and register an instance.

    ``spec_model`` must have a ``kind: Literal["<name>"]`` field: that is how a spec entry picks it.
    """

    name: str
    spec_model: type[SpecT]

    def options_layer(self, spec: SpecT) -> BlockOptions | None:
        """The entry's own layer of the ``defaults`` cascade (spec, then flow, then entry).

        A kind whose model extends :class:`BlockOptions` is such a layer itself; others override
        this to say which of their fields take part (or return ``None``: defaults only)."""
        return spec if isinstance(spec, BlockOptions) else None

    def stride_of(self, spec: SpecT) -> int:
        """The stride a spec entry asks for (the planner applies ``output_stride`` to it)."""
        stride = getattr(spec, "stride", 1)
        return stride if isinstance(stride, int) else 1

    @abstractmethod
    def plan(self, spec: SpecT, options: ResolvedOptions, in_shape: Shape, ctx: PlanContext) -> BlockPlan:
        """Channels, output shape, parameters and MACs of one block, and the config ``build`` takes."""

    @abstractmethod
    def build(self, config: ConfigT) -> nn.Module:
        """The modules of one planned block (``config`` is what :meth:`plan` put in its ``BlockPlan``)."""

    @abstractmethod
    def diagram(self, config: ConfigT) -> BlockDiagram:
        """What a drawing of the planned block shows (``config`` as for :meth:`build`); no torch."""


# Far beyond any real layer (the widest shipped layer has 2,048 channels), and small enough for every
# backend's integer types: a mistyped `stride: 20000000000` fails in planning, not deep in torch.
MAX_DIMENSION = 1 << 24
# Separable convs in one block (the shipped blocks have at most 3).
MAX_REPS = 1_000


def check_range(ctx: PlanContext, field: str, value: int, what: str, limit: int = MAX_DIMENSION) -> None:
    """Fail, pointing at ``field``, when a count is larger than any network could use."""
    if value > limit:
        ctx.fail(f"{what} {value:,} is out of range: at most {limit:,}", field)


def conv_output_size(size: int, kernel: int, stride: int, padding: int | str, dilation: int = 1) -> int:
    """Output side of a convolution or pool; ``padding`` is a count or ``"same"`` (TensorFlow's
    rule: ceil(size / stride), whatever the kernel)."""
    if padding == "same":
        return -(-size // stride)
    return (size + 2 * int(padding) - (kernel - 1) * dilation - 1) // stride + 1


def symmetric_padding(kernel: int, dilation: int = 1) -> int:
    """``kernel // 2`` on every side, widened with the dilation: odd kernels keep the size at stride 1."""
    return (kernel - 1) * dilation // 2


def conv_costs(in_shape: Shape, out_channels: int, kernel: int, stride: int, padding: int | str,
               groups: int = 1, bias: bool = False, dilation: int = 1) -> tuple[Shape, int, int]:
    """Output shape, parameters and multiply-accumulates of one 2-D convolution."""
    height = conv_output_size(in_shape.height, kernel, stride, padding, dilation)
    width = conv_output_size(in_shape.width, kernel, stride, padding, dilation)
    out = Shape(out_channels, height, width)
    weights = out_channels * (in_shape.channels // groups) * kernel * kernel
    params = weights + (out_channels if bias else 0)
    macs = weights * max(height, 0) * max(width, 0)
    return out, params, macs


def layer_label(op: str) -> str:
    """How a drawing names a norm or an activation of a layout: ``BN``, ``ReLU``, ``SiLU``."""
    if op == "norm":
        return "BN"  # every norm a spec builds is a BatchNorm2d (layers.make_norm)
    return ACTIVATIONS[op].module


def strided(label: str, stride: int, dilation: int) -> str:
    """``label`` with the stride and the dilation it runs at, where they are not 1."""
    return label + (f", stride {stride}" if stride > 1 else "") + (f", dilation {dilation}" if dilation > 1 else "")


def norm_params(channels: int) -> int:
    """Trainable parameters of a BatchNorm (weight and bias; running stats are buffers)."""
    return 2 * channels
