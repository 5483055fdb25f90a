"""Builder: spec -> plan -> ``XceptionNet``, with seeded, deterministic initialisation.

``build_model`` takes timm's keyword habits too (``num_classes``, ``global_pool``, ``drop_rate``,
``in_chans``, ``output_stride``, ``features_only``, ``out_indices``, ``checkpoint_path``): each
keyword is a ``--set`` override of the spec, so the model's ``spec`` and ``plan`` say what it is.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch
from torch import nn

from .errors import UserError
from .model import GLOBAL_POOLS, XceptionFeatures, XceptionNet, build_network
from .plan import Plan, plan_spec
from .source import SpecSource
from .spec import Spec, load_spec, resolved_data, spec_from_source
from .variants import apply_overrides

#: build_model's timm-style keywords and the spec path each one sets
SPEC_KEYWORDS = {"num_classes": "head.num_classes", "global_pool": "head.pool", "drop_rate": "head.dropout",
                 "in_chans": "input.channels", "output_stride": "output_stride"}


@torch.no_grad()
def init_weights(model: nn.Module, seed: int = 0) -> None:
    """He-normal (fan-out) convolutions, unit norms, small classifier: the usual ImageNet
    recipe. A private generator makes the result depend on ``seed`` alone, not on global RNG.

    The fan-out counts one group's outputs: PyTorch's ``kaiming_normal_`` counts every channel of
    a depthwise conv, which makes its weights ~sqrt(channels) too small and starves the residual
    branches at the start of training (timm's EfficientNet init makes the same correction)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            kernel_h, kernel_w = module.kernel_size
            fan_out = kernel_h * kernel_w * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out), generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.reset_running_stats()
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            nn.init.uniform_(module.weight, -bound, bound, generator=generator)
            nn.init.zeros_(module.bias)


def _keyword_overrides(kwargs: dict[str, Any]) -> list[str]:
    """``num_classes=3`` -> ``head.num_classes=3``; an unknown keyword is a ``TypeError`` naming
    the known ones, as Python's own would."""
    overrides = []
    for key, value in kwargs.items():
        if key not in SPEC_KEYWORDS:
            close = difflib.get_close_matches(key, list(SPEC_KEYWORDS), n=1)
            raise TypeError(f"build_model() got an unexpected keyword argument {key!r}"
                            + (f"; did you mean {close[0]!r}?" if close else "")
                            + f" Keywords it takes beside the spec: {', '.join(SPEC_KEYWORDS)}, features_only, "
                            "out_indices, checkpoint_path, overrides, seed")
        if key == "global_pool" and isinstance(value, str):
            value = GLOBAL_POOLS.get(value, value)
        overrides.append(f"{SPEC_KEYWORDS[key]}={json.dumps(value)}")
    return overrides


def resolve_spec(spec_or_path: Spec | str | os.PathLike[str], overrides: Sequence[str] = ()) -> Spec:
    """A spec file or object with ``--set`` style overrides applied (and validated again)."""
    if not isinstance(spec_or_path, Spec):
        return load_spec(spec_or_path, overrides)
    if not overrides:
        return spec_or_path
    source = spec_or_path.source or SpecSource(resolved_data(spec_or_path))
    return spec_from_source(apply_overrides(source, overrides))


def first_conv_name(model: nn.Module) -> str:
    """The name of the first convolution (timm's ``pretrained_cfg['first_conv']``)."""
    return next(name for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


def pretrained_cfg_of(spec: Spec, plan: Plan, model: nn.Module) -> dict[str, Any]:
    return {
        "architecture": spec.name,
        "input_size": spec.input.shape,
        "mean": tuple(spec.input.mean),
        "std": tuple(spec.input.std),
        "interpolation": spec.input.interpolation,
        "crop_pct": spec.input.crop_pct,
        "num_classes": spec.head.num_classes,
        "pool_size": (plan.feature_shape.height, plan.feature_shape.width),
        "first_conv": first_conv_name(model),
        "classifier": "head.fc",
    }


@overload
def build_model(spec_or_path: Spec | str | os.PathLike[str], *, overrides: Sequence[str] = ..., seed: int = ...,
                features_only: Literal[False] = ..., out_indices: int | Sequence[int] | None = ...,
                checkpoint_path: str | os.PathLike[str] | None = ..., pretrained: bool = ...,
                **kwargs: Any) -> XceptionNet: ...


@overload
def build_model(spec_or_path: Spec | str | os.PathLike[str], *, overrides: Sequence[str] = ..., seed: int = ...,
                features_only: Literal[True], out_indices: int | Sequence[int] | None = ...,
                checkpoint_path: str | os.PathLike[str] | None = ..., pretrained: bool = ...,
                **kwargs: Any) -> XceptionFeatures: ...


def build_model(spec_or_path: Spec | str | os.PathLike[str], *, overrides: Sequence[str] = (), seed: int = 0,
                features_only: bool = False, out_indices: int | Sequence[int] | None = None,
                checkpoint_path: str | os.PathLike[str] | None = None, pretrained: bool = False,
                **kwargs: Any) -> XceptionNet | XceptionFeatures:
    """Compile a spec (object or file path) into a freshly initialised ``XceptionNet``.

    Keywords as timm's ``create_model``: ``num_classes``, ``global_pool`` (``''``: no pooling),
    ``drop_rate``, ``in_chans``, ``output_stride`` (8, 16, 32) override the spec; ``checkpoint_path``
    loads weights (ours, timm's or Keras') into the whole network; ``features_only=True`` then
    returns an ``XceptionFeatures`` whose forward gives the maps of ``out_indices`` (default all).
    Nothing is downloaded: ``pretrained=True`` is refused, pass ``checkpoint_path``."""
    if pretrained:
        raise UserError("pretrained=True would download weights, which xception-build never does",
                        hint="pass checkpoint_path=PATH (safetensors, a torch state dict, timm's or Keras' .h5)")
    if out_indices is not None and not features_only:
        raise UserError("out_indices selects the maps of a features-only model: pass features_only=True too")
    spec = resolve_spec(spec_or_path, [*overrides, *_keyword_overrides(kwargs)])
    plan = plan_spec(spec)
    model = build_network(plan, spec)
    model.pretrained_cfg = pretrained_cfg_of(spec, plan, model)
    init_weights(model, seed)
    if checkpoint_path is not None:
        from .weights import load_weights

        load_weights(model, checkpoint_path)
    if features_only:
        return XceptionFeatures(model, out_indices)
    return model
