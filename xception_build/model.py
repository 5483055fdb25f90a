"""The compiled network: an ``nn.Module`` whose module names follow the spec.

``entry.stem.0``, ``entry.blocks.2.main.sep1.dw``, ``middle.blocks.7``, ``exit.final_act``,
``head.fc``: every name maps back to a spec entry through ``model.plan`` (see
``XceptionNet.spec_path_of``). The interface is the one timm users know: ``forward_features``,
``forward_head``, ``forward_intermediates``, ``reset_classifier``, ``num_features``,
``head_hidden_size``, ``feature_info``, ``pretrained_cfg`` (and its old name ``default_cfg``).

No ``from __future__ import annotations`` here: ``torch.fx`` copies the root ``forward``'s
annotations into the code it generates, and TorchScript can then script that code only if they
are real types, not strings.
"""

import dataclasses
import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .blocks import BLOCK_KINDS
from .errors import UserError
from .features import FeatureInfo, collect_intermediates, feature_info_of, take_indices, trunk
from .layers import make_activation
from .plan import FlowPlan, HeadPlan, Plan, PlannedBlock

if TYPE_CHECKING:
    from .spec import Spec

#: ``global_pool`` values (timm's spelling) and the spec's ``head.pool`` they mean
GLOBAL_POOLS = {"avg": "avg", "max": "max", "": "none", "none": "none"}


class Flow(nn.Module):
    """One of the entry, middle and exit flows: an optional stem, blocks, an optional activation.

    The flags are TorchScript constants, so that it compiles only the parts a flow has."""

    __constants__ = ["has_stem", "has_final_act"]  # TorchScript: compile only the branches these select

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


def _pool(kind: str) -> nn.Module:
    return {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1)}.get(kind) or nn.Identity()


class ClassifierHead(nn.Module):
    """Global pool -> flatten -> dropout -> linear (``fc`` is Identity with 0 classes; pool
    ``none`` leaves the feature map as it is, timm's ``global_pool=''``)."""

    def __init__(self, plan: HeadPlan) -> None:
        super().__init__()
        self.pool = _pool(plan.pool)
        self.flatten: nn.Module = nn.Flatten(1) if plan.pool != "none" else nn.Identity()
        self.drop = nn.Dropout(plan.dropout)
        self.fc: nn.Module = nn.Linear(plan.in_features, plan.num_classes) if plan.num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.pool(x))
        if pre_logits:
            return x
        return self.fc(self.drop(x))


class XceptionNet(nn.Module):
    """An Xception-family network compiled from a spec (build it with ``build_model``)."""

    __jit_unused_properties__ = ["default_cfg"]  # plain Python data: TorchScript leaves it alone

    def __init__(self, plan: Plan, flows: dict[str, Flow], spec: "Spec | None" = None) -> None:
        super().__init__()
        self.plan = plan
        self.spec = spec
        self.entry = flows["entry"]
        self.middle = flows["middle"]
        self.exit = flows["exit"]
        self.head = ClassifierHead(plan.head)
        self.num_features = plan.num_features
        self.head_hidden_size = plan.num_features  # what pre_logits gives: the pooled features
        self.num_classes = plan.head.num_classes
        self.feature_info = feature_info_of(plan)
        self.pretrained_cfg = dict[str, Any]()  # no annotation: TorchScript warns on annotated empty containers

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's former name of ``pretrained_cfg`` (the same dict)."""
        return self.pretrained_cfg

    # -- timm-style interface --------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit(self.middle(self.entry(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of ``feature_info`` on the way through the trunk, as timm defines it.

        ``indices``: None all, an int the last n, a list those (negative from the end). ``norm``
        applies the network's closing activation (``exit.final_act``) to the last map, which
        otherwise is the last block's output. ``stop_early`` stops after the last map asked for.
        Returns ``(features, maps)``, or the maps alone with ``intermediates_only``; the features
        are ``forward_features(x)`` unless the run stopped early."""
        flows = [("entry", self.entry), ("middle", self.middle), ("exit", self.exit)]
        features, maps = collect_intermediates(flows, self.plan.taps, x, indices, norm,
                                               stop_early or intermediates_only, output_fmt)
        return maps if intermediates_only else (features, maps)

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Remove what the feature maps ``indices`` do not need: later blocks, with ``prune_norm``
        the closing activation, with ``prune_head`` the classifier (``reset_classifier(0, '')``).
        Returns the absolute indices kept, as timm's does. A block holding a tap stays whole."""
        taken, last = take_indices(len(self.plan.taps), indices)
        owner = self.plan.taps[last].owner
        flows = [("entry", self.entry), ("middle", self.middle), ("exit", self.exit)]
        order = [name for name, _ in trunk(flows)]
        cut = order.index(owner)
        closing = owner == self.plan.blocks[-1].module_name  # the owner is the last block: only the end follows
        for name in order[cut + 1:]:
            flow_name, part, *index = name.split(".")
            flow = getattr(self, flow_name)
            if part == "final_act":
                if prune_norm or not closing:
                    flow.final_act = nn.Identity()
            else:
                seq = getattr(flow, part)
                del seq[len(seq) - 1]  # later modules first: the kept ones keep their names
        if prune_head:
            self.reset_classifier(0, "")
        return taken

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (new, freshly initialised weights); 0 removes it. ``global_pool``:
        ``avg``, ``max``, or ``''`` (no pooling, only with 0 classes, as in timm). ``spec`` and
        ``plan`` are updated to say the same."""
        head = self.plan.head
        pool = head.pool
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise UserError(f"global_pool {global_pool!r} is not valid; valid choices: 'avg', 'max', "
                                "'' (no pooling)")
            pool = GLOBAL_POOLS[global_pool]
        if pool == "none" and num_classes:
            raise UserError(f"a classifier ({num_classes} classes) needs pooled features; with global_pool '' "
                            "use num_classes 0, or pool with 'avg' or 'max'")
        self.head.pool = _pool(pool)
        self.head.flatten = nn.Flatten(1) if pool != "none" else nn.Identity()
        reference = next(self.parameters())
        self.head.fc = (nn.Linear(self.num_features, num_classes).to(device=reference.device, dtype=reference.dtype)
                        if num_classes else nn.Identity())
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        self.plan = dataclasses.replace(self.plan, head=dataclasses.replace(head, num_classes=num_classes, pool=pool))
        if self.spec is not None:
            self.spec = self.spec.model_copy(update={"head": self.spec.head.model_copy(
                update={"num_classes": num_classes, "pool": pool})})

    # -- spec <-> module names ---------------------------------------------------------------
    def spec_path_of(self, module_name: str) -> str:
        """The spec entry a module was built from: ``middle.blocks.7.main.sep2`` -> ``middle.blocks[0]``."""
        return spec_path_of(self, self.plan, module_name)

    def modules_of(self, spec_path: str) -> list[str]:
        """Module names built from a spec entry (several where it has ``repeat``)."""
        return [b.module_name for b in self.plan.blocks if b.spec_path == spec_path]


def spec_path_of(model: nn.Module, plan: Plan, module_name: str) -> str:
    """The spec path of a module of ``model`` (compiled from ``plan``); ``UserError`` for a name
    the model does not have, with the closest names."""
    names = [name for name, _ in model.named_modules() if name]
    if module_name not in names:
        close = difflib.get_close_matches(module_name, names, n=3)
        hint = (f"did you mean {' or '.join(repr(c) for c in close)}? " if close else "") + \
            "module names are those of model.named_modules(), e.g. entry.stem.0, middle.blocks.3.main.sep2.dw"
        raise UserError(f"the network has no module named {module_name!r}", hint=hint)
    for block in plan.blocks:
        if module_name == block.module_name or module_name.startswith(block.module_name + "."):
            return block.spec_path
    if module_name.startswith("head"):
        return "head"
    return module_name  # a flow, its stem or blocks list, its final_act: named as in the spec


def pretrained_cfg_for_features(cfg: dict[str, Any]) -> dict[str, Any]:
    """A backbone's cfg: the classifier's entries removed, as timm does for features-only models."""
    return {k: v for k, v in cfg.items() if k not in ("num_classes", "classifier", "global_pool")}


class XceptionFeatures(nn.Module):
    """A features-only network: ``forward(x)`` returns the feature maps of ``out_indices``.

    Built by ``build_model(spec, features_only=True, out_indices=...)`` from a full network,
    which is cut after the last tap it needs (head and later blocks removed, as timm prunes);
    module and parameter names stay those of the full network (``entry.blocks.0.main...``)."""

    def __init__(self, net: XceptionNet, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.full_plan: Plan = net.plan  # the whole network's, classifier included: checkpoints fit it
        taken = net.prune_intermediate_layers(out_indices if out_indices is not None else len(net.plan.taps),
                                              prune_norm=True, prune_head=True)
        self.entry = net.entry
        self.middle = net.middle
        self.exit = net.exit
        self.plan: Plan = net.plan
        self.spec: Spec | None = net.spec
        self.out_indices = tuple(taken)
        self.feature_info = FeatureInfo(feature_info_of(net.plan), taken)
        self.pretrained_cfg = pretrained_cfg_for_features(net.pretrained_cfg)
        self.default_cfg = self.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        flows = [("entry", self.entry), ("middle", self.middle), ("exit", self.exit)]
        _, maps = collect_intermediates(flows, self.plan.taps, x, list(self.out_indices), norm=False,
                                        stop_early=True, output_fmt="NCHW")
        return maps


def build_network(plan: Plan, spec: "Spec | None") -> XceptionNet:
    """The network of ``plan``, each block built by its kind (parameters as PyTorch initialises them)."""
    return XceptionNet(plan, {flow.name: _build_flow(flow) for flow in plan.flows}, spec)


def _build_block(block: PlannedBlock) -> nn.Module:
    return BLOCK_KINDS[block.kind].build(block.config)


def _build_flow(plan: FlowPlan) -> Flow:
    stem = nn.Sequential(*(_build_block(b) for b in plan.stem)) if plan.stem else None
    blocks = nn.Sequential(*(_build_block(b) for b in plan.blocks))
    # Not in place: the last block's output, which it would overwrite, is a feature map of its own
    # (forward_intermediates returns it beside the activated features).
    final = make_activation(plan.final_activation, inplace=False) if plan.final_activation else None
    return Flow(stem, blocks, final)
