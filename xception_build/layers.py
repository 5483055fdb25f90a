"""Small single-concern modules the block kinds are assembled from.

Kept free of spec logic: a layer takes numbers and names, never a spec object, so block kinds
stay the only place that knows how a spec option turns into modules.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .activations import ACTIVATIONS

#: the module classes of every activation in the table, by name
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {name: getattr(nn, a.module) for name, a in ACTIVATIONS.items()}


def make_activation(kind: str, *, inplace: bool) -> nn.Module | None:
    """An activation module, or ``None`` for ``none`` (nothing is inserted at all).

    ``inplace`` is a request: some activations (GELU) have no in-place form. Callers pass
    ``inplace=False`` where the input tensor is read again (a shortcut taken from the block input).
    """
    if kind == "none":
        return None
    factory = ACTIVATION_MODULES[kind]
    return factory(inplace=inplace) if ACTIVATIONS[kind].has_inplace else factory()


def make_norm(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class NamedSequential(nn.Sequential):
    """A Sequential built from (name, module) pairs, skipping ``None`` entries, so module names
    say what a layer is (``dw``, ``pw_norm``) rather than a position."""

    def __init__(self, layers: list[tuple[str, nn.Module | None]]) -> None:
        super().__init__(OrderedDict((name, module) for name, module in layers if module is not None))


class ResidualBlock(nn.Module):
    """``main(x) + shortcut(x)``, optionally after a shared pre-activation.

    ``shortcut`` is a module (projection), ``nn.Identity`` or ``None`` (no residual at all).
    With ``preact`` the shortcut reads the pre-activated tensor, as in timm's ``xception41p``.

    The add writes into the main path's output (``inplace``), saving one activation-sized
    allocation per block, unless that output is an activation's, which autograd keeps for the
    backward pass, or the two sides differ in dtype (autocast), where ``+`` would promote.
    """

    def __init__(self, main: nn.Module, shortcut: nn.Module | None,
                 preact: nn.Module | None = None) -> None:
        super().__init__()
        if preact is not None:
            self.preact = preact
        self.main = main
        if shortcut is not None:
            self.shortcut = shortcut
        self.has_preact = preact is not None
        self.has_shortcut = shortcut is not None
        last = list(main.modules())[-1]
        self.inplace = not isinstance(last, tuple(ACTIVATION_MODULES.values()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_preact:
            x = self.preact(x)
        out = self.main(x)
        if self.has_shortcut:
            skip = self.shortcut(x)
            out = out.add_(skip) if self.inplace and out.dtype == skip.dtype else out + skip
        return out
