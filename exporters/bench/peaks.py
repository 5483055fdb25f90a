"""What a device could do at best: peak FLOP/s per precision and memory bandwidth.

GPU peaks come from vendor datasheets (dense, no sparsity). A CPU's peak is an estimate from the
instructions /proc/cpuinfo lists: a precision the CPU has no instructions for (bf16 without
``avx512_bf16`` or AMX; int8 without VNNI or even AVX2's VPMADDUBSW) runs emulated through fp32
arithmetic, so it is listed as emulated with the fp32 peak as its ceiling, never given a peak of
its own. (Measured on a CPU
without ``avx512_bf16``: the bf16 training step ran 2.2x slower than fp32.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DevicePeak:
    """Dense peak FLOP/s (int8: OP/s) per precision, and memory bandwidth in bytes/s."""

    name: str
    flops: dict[str, float] = field(default_factory=dict)
    bandwidth: float | None = None
    source: str = "vendor datasheet, dense"
    emulated: tuple[str, ...] = ()  # precisions without hardware support: their ceiling is the fp32 peak

    def flops_for(self, precision: str) -> float | None:
        """The peak a row of ``precision`` is compared with (fp32's for an emulated precision)."""
        if precision in self.emulated:
            return self.flops.get("fp32")
        return self.flops.get(precision, self.flops.get("fp32"))


_HOPPER_SXM = {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12, "int8": 1978.9e12}
_HOPPER_NVL = {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12, "int8": 1671e12}
_AMPERE = {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12, "int8": 624e12}
# (substrings that must all appear in torch.cuda.get_device_name(), peak); first match wins.
KNOWN_GPUS: tuple[tuple[tuple[str, ...], DevicePeak], ...] = (
    (("H200",), DevicePeak("NVIDIA H200 SXM", _HOPPER_SXM, 4.8e12)),
    (("H100", "PCIE"), DevicePeak("NVIDIA H100 PCIe",
                                  {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12,
                                   "int8": 1513e12}, 2.0e12)),
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
    return read_proc_fields("/proc/cpuinfo")


def cpu_name() -> str | None:
    """The CPU model as /proc/cpuinfo names it, or None where it does not (not Linux, some ARM)."""
    names = cpuinfo().get("model name")
    return names[0] if names else None


#: the instruction sets that decide what a CPU runs fast, as /proc/cpuinfo spells them: every CPU
#: figure names the ones present, since the machines differ from run to run
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")


def cpu_isa_flags(info: Mapping[str, list[str]] | None = None) -> tuple[str, ...]:
    """Which of :data:`ISA_FLAGS` this CPU (or the /proc/cpuinfo fields ``info``) lists."""
    fields = cpuinfo() if info is None else info
    flags = set(fields["flags"][-1].split()) if fields.get("flags") else set()
    return tuple(flag for flag in ISA_FLAGS if flag in flags)


def cpu_peak_from(info: Mapping[str, list[str]], threads: int) -> DevicePeak:
    """The estimate for a CPU described by /proc/cpuinfo fields, run on ``threads`` threads.

    FLOPs per cycle per core, two FMA ports: AVX-512 64 fp32; AVX2+FMA 32; else 8. bf16: AMX tiles
    1024 MACs = 2048 FLOPs per cycle; ``avx512_bf16`` (VDPBF16PS) twice the fp32 rate; neither:
    emulated. int8: VNNI (VPDPBUSD) four times the fp32 rate of its vector width; AMX int8 4096
    OPs per cycle; neither, but AVX2 (or AVX-512 BW): VPMADDUBSW, 4/3 the fp32 rate; none: emulated.
    Memory bandwidth is not knowable from inside the process.
    """
    flags = set(info["flags"][-1].split()) if info.get("flags") else set()
    mhz = 0.0
    for value in info.get("cpu MHz", []):
        with contextlib.suppress(ValueError):
            mhz = max(mhz, float(value))
    ghz = mhz / 1000 if mhz else 2.0
    fp32 = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    isa = "AVX-512" if fp32 == 64 else "AVX2+FMA" if fp32 == 32 else "SSE"
    per_cycle: dict[str, float] = {"fp32": fp32}
    notes = []
    # (precision, FLOPs per cycle, instructions), the best the CPU has first
    candidates = [("bf16", 2048, "amx_bf16", "AMX"), ("bf16", 2 * fp32, "avx512_bf16", "AVX512_BF16"),
                  ("int8", 4096, "amx_int8", "AMX"), ("int8", 4 * fp32, "avx512_vnni" if fp32 == 64 else "avx_vnni",
                                                        "VNNI"),
                  # without VNNI, int8 kernels (oneDNN, ONNX Runtime's MLAS) multiply with VPMADDUBSW and
                  # widen with VPMADDWD + VPADDD: 3 instructions per vector of MACs, 4/3 the fp32 rate
                  ("int8", (64 if "avx512bw" in flags else 32) * 4 / 3, "avx2", "VPMADDUBSW")]
    for precision, count, flag, isa_name in candidates:
        if precision not in per_cycle and flag in flags:
            per_cycle[precision] = count
            notes.append(f"{precision} via {isa_name}")
    emulated = [p for p in ("bf16", "int8") if p not in per_cycle]
    if emulated:
        notes.append(f"{' and '.join(emulated)} emulated (no instructions for it)")
    scale = threads * ghz * 1e9
    return DevicePeak(f"CPU ({threads} threads, {os.cpu_count()} cores visible)",
                      {precision: scale * count for precision, count in per_cycle.items()}, None,
                      f"estimate: {threads} threads × {ghz:.2f} GHz × {fp32} fp32 FLOP/cycle ({isa})"
                      + "".join(f", {note}" for note in notes), tuple(emulated))


def cpu_peak() -> DevicePeak:
    """:func:`cpu_peak_from` this machine's /proc/cpuinfo and torch's thread count."""
    return cpu_peak_from(cpuinfo(), torch.get_num_threads())


def device_peak(device: torch.device | str) -> DevicePeak | None:
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device))
    return cpu_peak()


def peak_precision(device: torch.device | str, amp: str = "none", *, strict_fp32: bool = False) -> str:
    """The precision a run's figures are compared with: the autocast dtype, else tf32 where cuDNN
    uses it for fp32 convolutions (unless the run turned it off), else fp32."""
    if amp != "none":
        return amp
    if torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32 and not strict_fp32:
        return "tf32"
    return "fp32"
