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

import contextlib
import copy
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn


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
        input_size = tuple(model.pretrained_cfg["input_size"])  # type: ignore[index, union-attr]
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


# ------------------------------------------------------------------------------------ device peaks


@dataclass(frozen=True)
class DevicePeak:
    """Dense (no sparsity) peak FLOP/s per precision and memory bandwidth in bytes/s."""

    name: str
    flops: dict[str, float] = field(default_factory=dict)  # "fp32", "tf32", "bf16", "fp16"
    bandwidth: float | None = None
    source: str = "vendor datasheet, dense"


_HOPPER_SXM = {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12}
_HOPPER_NVL = {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12}
_AMPERE = {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12}
# (substrings that must all appear in torch.cuda.get_device_name(), peak); first match wins.
KNOWN_GPUS: tuple[tuple[tuple[str, ...], DevicePeak], ...] = (
    (("H200",), DevicePeak("NVIDIA H200 SXM", _HOPPER_SXM, 4.8e12)),
    (("H100", "PCIE"), DevicePeak("NVIDIA H100 PCIe",
                                  {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12}, 2.0e12)),
    (("H100", "NVL"), DevicePeak("NVIDIA H100 NVL", _HOPPER_NVL, 3.9e12)),
    (("H100",), DevicePeak("NVIDIA H100 SXM", _HOPPER_SXM, 3.35e12)),
    (("A100", "80GB"), DevicePeak("NVIDIA A100 80GB", _AMPERE, 2.039e12)),
    (("A100",), DevicePeak("NVIDIA A100 40GB", _AMPERE, 1.555e12)),
)


def gpu_peak(device_name: str) -> DevicePeak | None:
    """The datasheet peak for a GPU name as torch reports it, or None when it is not in the table."""
    upper = device_name.upper()
    for needles, peak in KNOWN_GPUS:
        if all(n in upper for n in needles):
            return peak
    return None


#: where Linux lists the CPUs; a module attribute so that tests can point it at a fixture
CPUINFO = "/proc/cpuinfo"


def read_proc_fields(path: str) -> dict[str, list[str]]:
    """Every ``key: value`` line of a Linux /proc file, values in file order ({} where it cannot be read).

    A key has one value per occurrence: /proc/cpuinfo repeats its keys once per logical CPU.
    """
    fields: dict[str, list[str]] = {}
    try:
        with open(path) as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), []).append(value.strip())
    except (OSError, UnicodeDecodeError):
        return {}
    return fields


def cpuinfo() -> dict[str, list[str]]:
    """/proc/cpuinfo as :func:`read_proc_fields` reads it: ``model name``, ``flags``, ``cpu MHz``..."""
    return read_proc_fields(CPUINFO)


def cpu_name() -> str | None:
    """The CPU model as /proc/cpuinfo names it, or None where it does not (not Linux, some ARM)."""
    names = cpuinfo().get("model name")
    return names[0] if names else None


def cpu_peak() -> DevicePeak:
    """An estimate: threads × clock × FLOPs/cycle from the vector units that /proc/cpuinfo lists.

    FLOPs per cycle per core: 2 FMA units × lanes × 2 (AVX-512: 64 fp32, AVX2+FMA: 32, else 8);
    bf16 with AMX tiles: 1024 MACs = 2048 FLOPs per cycle. Memory bandwidth is not knowable
    from inside the process, so it is left out (None).
    """
    threads = torch.get_num_threads()
    info = cpuinfo()
    flags = set(info["flags"][-1].split()) if info.get("flags") else set()
    mhz = 0.0
    for value in info.get("cpu MHz", []):
        with contextlib.suppress(ValueError):
            mhz = max(mhz, float(value))
    ghz = mhz / 1000 if mhz else 2.0
    fp32 = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    bf16 = 2048 if "amx_bf16" in flags else 128 if "avx512_bf16" in flags else fp32
    isa = "AVX-512" if fp32 == 64 else "AVX2+FMA" if fp32 == 32 else "SSE"
    return DevicePeak(f"CPU ({threads} threads, {os.cpu_count()} cores visible)",
                      {"fp32": threads * ghz * 1e9 * fp32, "bf16": threads * ghz * 1e9 * bf16},
                      None, f"estimate: {threads} threads × {ghz:.2f} GHz × {fp32} fp32 FLOP/cycle ({isa})"
                      + (", bf16 via AMX" if "amx_bf16" in flags else ""))


def device_peak(device: torch.device | str) -> DevicePeak | None:
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device))
    return cpu_peak()


def precision_of(device: torch.device | str, amp: str = "none") -> str:
    """The peak to compare with: the autocast dtype, else tf32 where cuDNN uses it for fp32 convs."""
    if amp != "none":
        return amp
    if torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "fp32"


def fraction_of_peak(figures: AnalyticFigures, images_per_s: float, peak: DevicePeak | None,
                     precision: str = "fp32", *, training: bool = False) -> dict[str, float | None]:
    """Achieved FLOP/s and bytes/s from a measured rate, and their fractions of the peak (None: unknown)."""
    factor = 3 if training else 1
    figures = figures.at(2 if precision in ("bf16", "fp16") else 4)
    flops = factor * figures.flops * images_per_s
    traffic = factor * figures.activation_bytes * images_per_s
    peak_flops = peak.flops.get(precision, peak.flops.get("fp32")) if peak else None
    return {
        "achieved_flops": flops,
        "fraction_flops": flops / peak_flops if peak_flops else None,
        "achieved_bytes_per_s": traffic,
        "fraction_bandwidth": traffic / peak.bandwidth if peak and peak.bandwidth else None,
    }
