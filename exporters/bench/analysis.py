"""Analytic figures of a network, and how close a measured throughput comes to the device's peak.

Why: a latency on its own does not say whether a backend is good. Next to the work a network
must do (MACs, bytes of weights, bytes of activations) and the device's peak FLOP/s and memory
bandwidth, it says how much is left on the table, and whether compute or memory is the wall.
Depthwise convolutions have a low arithmetic intensity (few FLOPs per byte moved), so Xception
tends to be bandwidth-bound long before it is compute-bound.

Conventions (stated, because published figures differ by them):
- MACs count convolutions and linear layers only (BN, ReLU, pooling and adds are left out), as
  timm and the paper's 8.4 GMACs do. One MAC = 2 FLOPs.
- Activation bytes per image = the output size of every leaf module at batch 1, summed. In-place
  ops (ReLU(inplace)) are counted although they allocate nothing: it is the traffic a naive
  (unfused) executor writes, an upper bound on what a fused one needs.
- Arithmetic intensity = FLOPs / (parameter bytes + activation bytes), at batch 1.
- Training is taken as 3× the forward FLOPs and traffic (backward ≈ 2× forward): a rough factor.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from exporters.bench.peaks import DevicePeak


@dataclass(frozen=True)
class AnalyticFigures:
    input_size: tuple[int, int, int]
    params: int
    macs: int  # per image
    activation_elements: int  # per image, all leaf outputs
    dtype_bytes: int = 4

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def param_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def activation_bytes(self) -> int:
        return self.activation_elements * self.dtype_bytes

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte of weights + activations, at batch 1."""
        return self.flops / max(self.param_bytes + self.activation_bytes, 1)

    def at(self, dtype_bytes: int) -> AnalyticFigures:
        """The same network counted at another element size (2 for bf16/fp16)."""
        return AnalyticFigures(self.input_size, self.params, self.macs, self.activation_elements, dtype_bytes)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "flops": self.flops, "param_bytes": self.param_bytes,
                "activation_bytes": self.activation_bytes, "arithmetic_intensity": self.arithmetic_intensity}


def analyse(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> AnalyticFigures:
    """Count MACs and leaf-module outputs with forward hooks over one batch-1 pass.

    The pass runs on the meta device (shapes only, no memory, no time) on a copy of the model;
    if some op has no meta kernel it falls back to a real CPU pass under ``no_grad``.
    """
    model = getattr(model, "_orig_mod", model)
    if input_size is None:
        plan = getattr(model, "plan", None)
        if plan is None:
            raise TypeError("analyse() needs input_size for a model that was not compiled from a spec")
        input_size = plan.input_shape.as_tuple()
    params = sum(p.numel() for p in model.parameters())
    try:
        meta = copy.deepcopy(model).to("meta")
        macs, elements = _count(meta, torch.empty(1, *input_size, device="meta"))
    except (NotImplementedError, RuntimeError):
        device = next(model.parameters()).device
        was_training = model.training
        try:
            macs, elements = _count(model, torch.zeros(1, *input_size, device=device))
        finally:
            model.train(was_training)
    return AnalyticFigures(tuple(input_size), params, macs, elements)  # type: ignore[arg-type]


def _count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    totals = {"macs": 0, "elements": 0}

    def hook(module: nn.Module, _inputs: tuple[object, ...], output: object) -> None:
        if isinstance(output, torch.Tensor):
            totals["elements"] += output.numel()
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                totals["macs"] += output.numel() * (module.in_channels // module.groups) * kh * kw
            elif isinstance(module, nn.Linear):
                totals["macs"] += output.numel() * module.in_features

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return totals["macs"], totals["elements"]


def fraction_of_peak(figures: AnalyticFigures, images_per_s: float, peak: DevicePeak | None,
                     precision: str = "fp32", *, training: bool = False) -> dict[str, float | None]:
    """Achieved FLOP/s and bytes/s from a measured rate, and their fractions of the peak (None: unknown)."""
    factor = 3 if training else 1
    figures = figures.at({"int8": 1, "bf16": 2, "fp16": 2}.get(precision, 4))
    flops = factor * figures.flops * images_per_s
    traffic = factor * figures.activation_bytes * images_per_s
    peak_flops = peak.flops_for(precision) if peak else None
    return {
        "achieved_flops": flops,
        "fraction_flops": flops / peak_flops if peak_flops else None,
        "achieved_bytes_per_s": traffic,
        "fraction_bandwidth": traffic / peak.bandwidth if peak and peak.bandwidth else None,
    }
