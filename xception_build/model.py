"""The compiled network: an ``nn.Module`` whose module names follow the spec.

``entry.stem.0``, ``entry.blocks.2.main.sep1.dw``, ``middle.blocks.7``, ``exit.final_act``,
``head.fc``: every name maps back to a spec entry through ``model.plan`` (see
``XceptionNet.spec_path_of``). The interface is the one timm users know: ``forward_features``,
``forward_head``, ``reset_classifier``, ``num_features`` and ``pretrained_cfg``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .layers import make_activation
from .plan import FlowPlan, HeadPlan, Plan, PlannedBlock

if TYPE_CHECKING:
    from .spec import Spec


class Flow(nn.Module):
    """One of the entry, middle and exit flows: an optional stem, blocks, an optional activation."""

    def __init__(self, stem: nn.Sequential | None, blocks: nn.Sequential, final_act: nn.Module | None) -> None:
        super().__init__()
        if stem is not None:
            self.stem = stem
        self.blocks = blocks
        if final_act is not None:
            self.final_act = final_act
        self.has_stem = stem is not None
        self.has_final_act = final_act is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_stem:
            x = self.stem(x)
        x = self.blocks(x)
        if self.has_final_act:
            x = self.final_act(x)
        return x


class ClassifierHead(nn.Module):
    """Global pool -> flatten -> dropout -> linear (``fc`` is Identity with 0 classes)."""

    def __init__(self, plan: HeadPlan) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if plan.pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(plan.dropout)
        self.fc: nn.Module = nn.Linear(plan.in_features, plan.num_classes) if plan.num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.pool(x))
        if pre_logits:
            return x
        return self.fc(self.drop(x))


class XceptionNet(nn.Module):
    """An Xception-family network compiled from a spec (build it with ``build_model``)."""

    def __init__(self, plan: Plan, flows: dict[str, Flow], spec: Spec | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.spec = spec
        self.entry = flows["entry"]
        self.middle = flows["middle"]
        self.exit = flows["exit"]
        self.head = ClassifierHead(plan.head)
        self.num_features = plan.num_features
        self.num_classes = plan.head.num_classes
        self.pretrained_cfg: dict[str, Any] = {}

    # -- timm-style interface --------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit(self.middle(self.entry(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (new, freshly initialised weights); 0 removes it."""
        if global_pool is not None:
            if global_pool not in ("avg", "max"):
                raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
            self.head.pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        reference = next(self.parameters())
        self.head.fc = (nn.Linear(self.num_features, num_classes).to(device=reference.device, dtype=reference.dtype)
                        if num_classes else nn.Identity())
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        head = self.plan.head
        self.plan = dataclasses.replace(self.plan, head=dataclasses.replace(
            head, num_classes=num_classes, pool=global_pool or head.pool,
            params=head.in_features * num_classes + num_classes, macs=head.in_features * num_classes))

    # -- spec <-> module names ---------------------------------------------------------------
    def spec_path_of(self, module_name: str) -> str | None:
        """The spec entry a module was built from: ``middle.blocks.7.main.sep2`` -> ``middle.blocks[0]``."""
        for block in self.plan.blocks:
            if module_name == block.module_name or module_name.startswith(block.module_name + "."):
                return block.spec_path
        if module_name.startswith("head"):
            return "head"
        return None

    def modules_of(self, spec_path: str) -> list[str]:
        """Module names built from a spec entry (several where it has ``repeat``)."""
        return [b.module_name for b in self.plan.blocks if b.spec_path == spec_path]


def build_flow(plan: FlowPlan, build_block: Callable[[PlannedBlock], nn.Module]) -> Flow:
    stem = nn.Sequential(*(build_block(b) for b in plan.stem)) if plan.stem else None
    blocks = nn.Sequential(*(build_block(b) for b in plan.blocks))
    final = make_activation(plan.final_activation, inplace=True) if plan.final_activation else None
    return Flow(stem, blocks, final)
