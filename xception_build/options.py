"""The spec's shared vocabulary: activation names, norm settings and the block options that
cascade from ``defaults`` (top of the spec) to a flow's ``defaults`` to a single block.

Every spec model is strict (no silent coercion of ``true`` to ``1``), forbids unknown keys and
is frozen: nothing downstream of loading may change a validated spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .activations import ActivationName, ActivationSetting

# Tokens of a separable conv's layout: the two convolutions, the block's norm and activation
# ("act", resolved from `activation`), or a named activation (the paper's ablation puts an ELU
# between depthwise and pointwise while the block's activation stays ReLU).
SepLayoutToken = Literal["dw", "pw", "norm", "act", ActivationName]
ShortcutKind = Literal["conv_norm", "conv", "identity", "none"]
DownsampleKind = Literal["maxpool", "depthwise"]
# How convolutions and pools pad: `symmetric` is PyTorch's and timm's (kernel // 2 on every side);
# `same` is TensorFlow's and Keras' (output = ceil(input / stride), an odd pixel after: bottom, right).
PaddingKind = Literal["symmetric", "same"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class SpecValueError(ValueError):
    """A validator's complaint about one field of the model it checks: ``at`` is that field's
    path below the model, so the error points at the field, not at the whole mapping."""

    def __init__(self, message: str, at: tuple[str | int, ...] = (), hint: str | None = None) -> None:
        super().__init__(message)
        self.at = at
        self.hint = hint


class NormOverride(StrictModel):
    """BatchNorm settings; PyTorch's momentum convention (0.1), not Keras' (0.99)."""

    eps: float | None = Field(default=None, gt=0)
    momentum: float | None = Field(default=None, ge=0, le=1)


def check_sep_layout(tokens: list[str] | None) -> list[str] | None:
    """A separable conv layout has one ``dw`` then one ``pw``; each of the three slots (before
    dw, between, after pw) holds at most one norm and one activation."""
    if tokens is None:
        return None
    if tokens.count("dw") != 1 or tokens.count("pw") != 1 or tokens.index("dw") > tokens.index("pw"):
        raise ValueError("a separable-conv layout needs exactly one 'dw' followed later by one 'pw', "
                         f"e.g. [act, dw, pw, norm]; got {tokens}")
    dw, pw = tokens.index("dw"), tokens.index("pw")
    for name, slot in (("before dw", tokens[:dw]), ("between dw and pw", tokens[dw + 1:pw]),
                       ("after pw", tokens[pw + 1:])):
        if slot.count("norm") > 1 or sum(t != "norm" for t in slot) > 1:
            raise ValueError(f"at most one norm and one activation {name}; got {slot}")
    return tokens


class BlockOptions(StrictModel):
    """Options any block may set; unset (``None``) means: inherit from the flow, then the spec."""

    activation: ActivationSetting | None = None
    norm: NormOverride | None = None
    layout: list[SepLayoutToken] | None = Field(
        default=None, description="order of ops inside each separable conv")
    shortcut: ShortcutKind | None = None
    downsample: DownsampleKind | None = Field(
        default=None, description="maxpool: MaxPool(3, stride) after the block; depthwise: stride on "
        "the last depthwise conv")
    preact: bool | None = Field(default=None, description="norm + activation on the block input, "
                                "shared by the main path and the shortcut")
    start_with_act: bool | None = Field(
        default=None, description="false: the first separable conv drops what its layout puts before "
        "its depthwise conv")
    grow_first: bool | None = None
    padding: PaddingKind | None = Field(
        default=None, description="symmetric: kernel // 2 on every side (PyTorch, timm); same: TensorFlow's "
        "rule, output = ceil(input / stride) with the odd pixel after (Keras)")

    @field_validator("layout")
    @classmethod
    def _check_layout(cls, value: list[str] | None) -> list[str] | None:
        return check_sep_layout(value)


class NormSpec(StrictModel):
    eps: float = Field(default=1e-5, gt=0)
    momentum: float = Field(default=0.1, ge=0, le=1)


class Defaults(StrictModel):
    """Spec-wide defaults: the paper's Xception (Chollet 2017) unless a spec says otherwise."""

    activation: ActivationSetting = "relu"
    norm: NormSpec = NormSpec()
    layout: list[SepLayoutToken] = ["act", "dw", "pw", "norm"]
    shortcut: ShortcutKind = "conv_norm"
    downsample: DownsampleKind = "maxpool"
    preact: bool = False
    start_with_act: bool = True
    grow_first: bool = True
    padding: PaddingKind = "symmetric"

    @field_validator("layout")
    @classmethod
    def _check_layout(cls, value: list[str]) -> list[str]:
        return check_sep_layout(value) or value


@dataclass(frozen=True)
class ResolvedOptions:
    """Block options after the defaults cascade: every field concrete."""

    activation: str
    norm_eps: float
    norm_momentum: float
    layout: tuple[str, ...]
    shortcut: str
    downsample: str
    preact: bool
    start_with_act: bool
    grow_first: bool
    padding: str


def resolve_options(defaults: Defaults, *layers: BlockOptions | None) -> ResolvedOptions:
    """Apply option layers (flow defaults, then the block) over the spec-wide defaults."""
    values = {name: getattr(defaults, name) for name in BlockOptions.model_fields if name != "norm"}
    eps, momentum = defaults.norm.eps, defaults.norm.momentum
    for layer in layers:
        if layer is None:
            continue
        for name in values:
            value = getattr(layer, name)
            if value is not None:
                values[name] = value
        if layer.norm is not None:
            eps = layer.norm.eps if layer.norm.eps is not None else eps
            momentum = layer.norm.momentum if layer.norm.momentum is not None else momentum
    values["layout"] = tuple(values["layout"])
    return ResolvedOptions(norm_eps=eps, norm_momentum=momentum, **values)
