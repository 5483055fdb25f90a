"""Small single-concern modules the block kinds are assembled from.

Kept free of spec logic: a layer takes numbers and names, never a spec object, so block kinds
stay the only place that knows how a spec option turns into modules.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

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


# -- TensorFlow's 'same' padding ------------------------------------------------------------

def pad_same(x: torch.Tensor, kernel: list[int], stride: list[int], dilation: list[int],
             value: float = 0.0) -> torch.Tensor:
    """Pad ``x`` as TensorFlow's ``padding='same'`` does: output = ceil(input / stride), the
    total padding split evenly with the odd pixel after (bottom, right). Worked out from the
    tensor's own size at run time, so any input size gets Keras' numbers.

    Registered with ``torch.fx.wrap``: symbolic tracing records one call instead of tracing
    integer arithmetic on sizes it cannot know; TorchScript and ``torch.export`` read it as is."""
    height, width = x.shape[-2], x.shape[-1]
    pad_h = max((-(-height // stride[0]) - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1 - height, 0)
    pad_w = max((-(-width // stride[1]) - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1 - width, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], value=value)


torch.fx.wrap("pad_same")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow 'same' padding worked out per input (zeros, odd pixel after).

    Used only where the padding depends on the input size (a stride above 1); elsewhere 'same'
    is a fixed symmetric padding and the builder makes a plain ``nn.Conv2d``. Parameters and
    their names are those of ``nn.Conv2d``, so checkpoints do not see the difference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride, dilation = list(self.kernel_size), list(self.stride), list(self.dilation)
        return self._conv_forward(pad_same(x, kernel, stride, dilation), self.weight, self.bias)


class MaxPool2dSame(nn.MaxPool2d):
    """``nn.MaxPool2d`` with TensorFlow 'same' padding: padded cells never win the max (-inf)."""

    def __init__(self, kernel: int, stride: int, dilation: int = 1) -> None:
        super().__init__(kernel, stride, 0, dilation)
        self.same = ([kernel, kernel], [stride, stride], [dilation, dilation])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride, dilation = self.same
        return F.max_pool2d(pad_same(x, kernel, stride, dilation, value=float("-inf")), kernel, stride, 0, dilation)


def same_padding(kernel: int, stride: int, dilation: int) -> int | None:
    """The fixed symmetric padding TensorFlow's 'same' amounts to, or ``None`` where it depends
    on the input size (stride above 1 with a kernel wider than one pixel) or is lopsided."""
    reach = (kernel - 1) * dilation + 1
    if reach == 1:
        return 0  # a 1x1 kernel: 'same' never pads, whatever the stride
    if stride == 1 and (reach - 1) % 2 == 0:
        return (reach - 1) // 2
    return None


def make_conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int | str,
              dilation: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A convolution; ``padding`` is a count (symmetric) or ``"same"`` (TensorFlow's rule)."""
    if padding == "same":
        fixed = same_padding(kernel, stride, dilation)
        if fixed is None:
            return Conv2dSame(in_channels, out_channels, kernel, stride, 0, dilation, groups=groups, bias=bias)
        padding = fixed
    return nn.Conv2d(in_channels, out_channels, kernel, stride, int(padding), dilation, groups=groups, bias=bias)


def make_max_pool(kernel: int, stride: int, padding: int | str, dilation: int = 1) -> nn.MaxPool2d:
    """A max-pool; ``padding`` is a count (symmetric) or ``"same"`` (TensorFlow's rule)."""
    if padding == "same":
        fixed = same_padding(kernel, stride, dilation)
        if fixed is None:
            return MaxPool2dSame(kernel, stride, dilation)
        padding = fixed
    return nn.MaxPool2d(kernel, stride, int(padding), dilation)


# -- residual blocks ---------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """``main(x) + shortcut(x)``, optionally after a shared pre-activation.

    ``shortcut`` is a module (projection), ``nn.Identity`` or ``None`` (no residual at all).
    With ``preact`` the shortcut reads the pre-activated tensor, as in timm's ``xception41p``.

    ``inplace`` (decided by the block kind from the plan) makes the add write into the main
    path's output, saving one activation-sized allocation per block. The kind allows it only
    where both sides are sure to have one dtype under autocast and autograd does not keep the
    main path's output; deciding it when the block is built, not from the tensors, keeps the
    forward free of data-dependent branches (``torch.fx``, ``torch.export``, TorchScript).

    The flags are TorchScript constants: it compiles only the branch they select, so a block
    without ``preact`` or ``shortcut`` modules scripts.
    """

    __constants__ = ["has_preact", "has_shortcut"]  # TorchScript: compile only the branches these select

    def __init__(self, main: nn.Module, shortcut: nn.Module | None,
                 preact: nn.Module | None = None, inplace: bool = False) -> None:
        super().__init__()
        if preact is not None:
            self.preact = preact
        self.main = main
        if shortcut is not None:
            self.shortcut = shortcut
        self.has_preact = preact is not None
        self.has_shortcut = shortcut is not None
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_preact:
            x = self.preact(x)
        out = self.main(x)
        if self.has_shortcut:
            skip = self.shortcut(x)
            out = out.add_(skip) if self.inplace else out + skip
        return out

    def forward_with_tap(self, x: torch.Tensor, tap: str, stop: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and the output of its sub-module ``tap`` (``main.sep3.pre_act``),
        read on the way: how a feature map inside a block reaches ``forward_intermediates``.
        With ``stop`` the rest of the block is skipped (the first result is then the tap too).
        The add is out of place here, so the tapped tensor is never written over."""
        parts = tap.split(".")
        tapped = x
        if self.has_preact:
            x = self.preact(x)
            if parts[0] == "preact":
                tapped = x
                if stop:
                    return x, x
        if parts[0] == "main":
            out, tapped = run_with_tap(self.main, x, parts[1:], stop)
            if stop:
                return tapped, tapped
        else:
            out = self.main(x)
        if self.has_shortcut:
            out = out + self.shortcut(x)
        return out, tapped


def run_with_tap(module: nn.Module, x: torch.Tensor, path: list[str],
                 stop: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a (nested) Sequential and also return the output of the child at ``path``."""
    if not path:
        out = module(x)
        return out, out
    tapped = x
    for name, child in module.named_children():
        if name == path[0]:
            x, tapped = run_with_tap(child, x, path[1:], stop)
            if stop:
                return tapped, tapped
        else:
            x = child(x)
    return x, tapped
