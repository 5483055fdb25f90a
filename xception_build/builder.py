"""Builder: spec -> plan -> ``XceptionNet``, with seeded, deterministic initialisation."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import nn

from .blocks import BLOCK_KINDS
from .model import XceptionNet, build_flow
from .plan import PlannedBlock, plan_spec
from .spec import Spec, load_spec


def _build_block(block: PlannedBlock) -> nn.Module:
    return BLOCK_KINDS[block.kind].build(block.config)


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


def build_model(spec_or_path: Spec | str | os.PathLike[str], *, overrides: Sequence[str] = (),
                seed: int = 0) -> XceptionNet:
    """Compile a spec (object or file path) into a freshly initialised ``XceptionNet``."""
    if isinstance(spec_or_path, Spec):
        if overrides:
            raise TypeError("overrides apply to spec files; pass them to load_spec instead")
        spec = spec_or_path
    else:
        spec = load_spec(spec_or_path, overrides)
    plan = plan_spec(spec)
    flows = {flow.name: build_flow(flow, _build_block) for flow in plan.flows}
    model = XceptionNet(plan, flows, spec)
    height, width = spec.input.height_width
    model.pretrained_cfg = {
        "architecture": spec.name,
        "input_size": (spec.input.channels, height, width),
        "mean": tuple(spec.input.mean),
        "std": tuple(spec.input.std),
        "interpolation": spec.input.interpolation,
        "crop_pct": spec.input.crop_pct,
        "num_classes": spec.head.num_classes,
        "pool_size": (plan.feature_shape.height, plan.feature_shape.width),
    }
    init_weights(model, seed)
    return model
