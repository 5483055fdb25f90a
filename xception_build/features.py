"""The compiled network as a backbone: multi-scale features with timm's conventions.

A segmenter or detector built for timm backbones (segmentation_models.pytorch, mmseg's
``TIMMBackbone``) needs three things, which this module gives an ``XceptionNet``:

- ``feature_info``: per tap its ``num_chs``, ``reduction`` and ``module`` (plus ``spec_path``),
  read from the plan; a :class:`FeatureInfo` on a features-only model (``channels()``,
  ``reduction()``, ``module_name()``, as timm's);
- ``forward_intermediates`` (``indices``, ``norm``, ``stop_early``, ``output_fmt``,
  ``intermediates_only``) as timm defines it, and ``prune_intermediate_layers``;
- ``build_model(spec, features_only=True, out_indices=...)``: ``model.XceptionFeatures``, whose
  forward returns the list of feature maps.

Taps sit where the plan put them (``plan.FeatureTap``): some inside a block (``main.sep3.pre_act``),
read on the way by ``ResidualBlock.forward_with_tap``. Everything here is plain Python over a
fixed list of modules, so ``torch.fx`` traces a features-only model as it traces the network
(no ``from __future__ import annotations``: see ``model.py``).
"""

import copy
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from .errors import UserError
from .layers import ResidualBlock, run_with_tap
from .plan import FeatureTap, Plan


class FlowLike(Protocol):
    """What the trunk walk reads of a flow (``model.Flow``)."""

    has_stem: bool
    has_final_act: bool
    stem: nn.Sequential
    blocks: nn.Sequential
    final_act: nn.Module

OUTPUT_FORMATS = ("NCHW", "NHWC")


def take_indices(count: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: ``None`` all taps, an int the last n, a sequence those
    (negative from the end); returns the absolute indices and the largest."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise UserError(f"last-n index {indices} is out of range: this network has {count} feature maps "
                            f"(1 to {count})")
        taken = list(range(count - indices, count))
    else:
        taken = []
        for index in indices:
            absolute = count + index if index < 0 else index
            if not 0 <= absolute < count:
                raise UserError(f"feature index {index} is out of range: this network has {count} feature maps "
                                f"(0 to {count - 1}, or -{count} to -1 from the end)")
            taken.append(absolute)
        if not taken:
            raise UserError("no feature index given: pass None (all), a count (the last n) or a list of indices")
    return taken, max(taken)


def feature_info_of(plan: Plan) -> list[dict[str, Any]]:
    """timm's ``feature_info`` list for a plan's taps (plus each tap's spec path)."""
    return [{"num_chs": tap.num_chs, "reduction": tap.reduction, "module": tap.module, "index": index,
             "spec_path": tap.spec_path} for index, tap in enumerate(plan.taps)]


class FeatureInfo:
    """timm's ``FeatureInfo``: the taps of a features-only model and the ones it returns."""

    def __init__(self, feature_info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = feature_info
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: Sequence[int]) -> "FeatureInfo":
        return FeatureInfo(copy.deepcopy(self.info), out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of every returned tap (``idx`` None), of tap ``idx``, or of the taps listed."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, int):
            return pick(idx)
        return [pick(i) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


def trunk(flows: Sequence[tuple[str, FlowLike]]) -> Iterator[tuple[str, nn.Module]]:
    """Every module of the trunk in forward order, by name: stems, blocks, flow activations."""
    for name, flow in flows:
        if flow.has_stem:
            for index, module in enumerate(flow.stem):
                yield f"{name}.stem.{index}", module
        for index, module in enumerate(flow.blocks):
            yield f"{name}.blocks.{index}", module
        if flow.has_final_act:
            yield f"{name}.final_act", flow.final_act


def collect_intermediates(flows: Sequence[tuple[str, FlowLike]], taps: Sequence[FeatureTap], x: torch.Tensor,
                          indices: int | Sequence[int] | None, norm: bool, stop_early: bool,
                          output_fmt: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the trunk, reading the taps asked for on the way (see ``XceptionNet.forward_intermediates``)."""
    if output_fmt not in OUTPUT_FORMATS:
        raise UserError(f"output_fmt {output_fmt!r} is not supported; valid choices: {', '.join(OUTPUT_FORMATS)}")
    taken, last_taken = take_indices(len(taps), indices)
    wanted = set(taken)
    by_owner: dict[str, list[tuple[int, FeatureTap]]] = {}
    for index, tap in enumerate(taps):
        by_owner.setdefault(tap.owner, []).append((index, tap))
    final_index = len(taps) - 1
    final_act: nn.Module | None = None
    intermediates: list[torch.Tensor] = []
    for name, module in trunk(flows):
        if name.endswith(".final_act"):
            final_act = module
        owned = [(i, t) for i, t in by_owner.get(name, []) if i in wanted]
        inner = [(i, t) for i, t in owned if t.inner]
        if inner:
            index, tap = inner[0]
            stop = stop_early and index == last_taken
            if isinstance(module, ResidualBlock):
                x, tapped = module.forward_with_tap(x, tap.inner, stop)
            else:
                x, tapped = run_with_tap(module, x, tap.inner.split("."), stop)
            intermediates.append(tapped)
            if stop:
                break
        else:
            x = module(x)
        outputs = [i for i, t in owned if not t.inner]
        if outputs:
            intermediates.append(x)
            if stop_early and outputs[0] == last_taken:
                break
    if norm and final_index in wanted and final_act is not None:
        # The network's closing activation is its "final norm" (timm's xception41p): applied to
        # the last map only when asked, as timm applies a final norm.
        intermediates[-1] = final_act(intermediates[-1])
    if output_fmt == "NHWC":
        intermediates = [t.permute(0, 2, 3, 1) for t in intermediates]
    return x, intermediates
