"""``xbuild bench --train``: the training step under each GPU lever, ours and timm's reference.

Times :class:`xception_build.training.TrainStep` (the step ``examples/train.py`` trains with) on
one fixed synthetic batch per configuration: fp32, bf16, fp16, channels_last, compile, then all
together. Where timm is importable, the same step on timm's ``legacy_xception`` gives the reference
the compiled model must keep up with. Peak memory is recorded per configuration: CUDA's allocator
peak on a GPU, the process's resident-set high-water mark on CPU.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch
from torch import nn

from exporters.bench.analysis import AnalyticFigures
from exporters.bench.peaks import device_peak, peak_precision, read_proc_fields
from exporters.bench.timing import BenchSettings, Progress, Timing, TrainRow, fill_row, measure, one_line
from xception_build.training import TrainOptions, TrainStep, synchronize

TRAIN_CONFIG_NAMES = ("fp32", "bf16", "fp16", "channels_last", "compile", "all")


def train_configs(device: torch.device) -> list[tuple[str, TrainOptions | None, str]]:
    """(name, options or None, reason when skipped): the levers one at a time, then all together."""
    gpu = device.type == "cuda"
    bf16_ok = not gpu or torch.cuda.is_bf16_supported()
    half = "bf16" if bf16_ok else "fp16"
    base = TrainOptions()
    return [
        ("fp32", base, ""),
        ("bf16", base.with_(amp="bf16") if bf16_ok else None, "this GPU has no bf16"),
        ("fp16", base.with_(amp="fp16") if gpu else None,
         "fp16 autocast + GradScaler is a GPU setting; on CPU bf16 is the half precision"),
        ("channels_last", base.with_(channels_last=True), ""),
        ("compile", base.with_(compile=True), ""),
        ("all", base.with_(amp=half, channels_last=True, compile=True), ""),
    ]


def bench_train(make_model: Callable[[], nn.Module], input_size: tuple[int, int, int], num_classes: int,
                device: torch.device, batch: int, settings: BenchSettings, figures: AnalyticFigures, *,
                on_task: Progress, make_reference: Callable[[], nn.Module] | None,
                reference_unavailable: str) -> list[TrainRow]:
    """Training-step throughput and peak memory per configuration, ours and the reference's."""
    peak = device_peak(device)
    rows: list[TrainRow] = []
    for name, options, why in train_configs(device):
        ours = TrainRow(config=name, model="xception-build", status="skipped", reason=why, batch=batch)
        ref = TrainRow(config=name, model="timm legacy_xception", status="skipped", reason=why, batch=batch)
        for row, factory in ((ours, make_model), (ref, make_reference)):
            on_task(f"train {name} {row.model}")
            if options is None:
                continue
            if factory is None:
                row.status, row.reason = "unavailable", reference_unavailable or "no reference requested"
                continue
            try:
                timing = _measure_train(row, factory, options, device, input_size, num_classes, settings)
                fill_row(row, timing, figures, peak, peak_precision(device, options.amp), training=True)
                row.status = "ok"
            except Exception as exc:
                row.status, row.reason = "failed", one_line(exc)
            finally:
                if options.compile:
                    torch._dynamo.reset()
        if ours.images_per_s and ref.images_per_s:
            ours.vs_reference = ours.images_per_s / ref.images_per_s
        rows += [ours, ref]
    return rows


def _measure_train(row: TrainRow, factory: Callable[[], nn.Module], options: TrainOptions,
                   device: torch.device, input_size: tuple[int, int, int], num_classes: int,
                   settings: BenchSettings) -> Timing:
    """Time ``TrainStep`` on one fixed synthetic batch; sets ``setup_s`` and the peak-memory fields."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    reset = _reset_rss_peak()
    torch.manual_seed(0)
    step = TrainStep(factory(), device, options)
    images = step.to_input(torch.randn(row.batch, *input_size, device=device))
    labels = torch.randint(num_classes, (row.batch,), device=device)
    t0 = time.perf_counter()
    step(images, labels)  # first step: torch.compile compiles here
    synchronize(device)
    row.setup_s = time.perf_counter() - t0
    timing = measure(lambda: step(images, labels), lambda: synchronize(device), warmup=settings.warmup,
                     min_reps=settings.min_reps, max_reps=settings.max_reps, budget_s=settings.budget_s)
    if device.type == "cuda":
        row.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
        row.memory_kind = "torch.cuda.max_memory_allocated: tensors of this config only"
    else:
        row.peak_memory_bytes = _rss_peak()
        row.memory_kind = ("process peak RSS (VmHWM, reset per config): whole process incl. torch runtime"
                           if reset else "process peak RSS since start (ru_maxrss, not reset per config)")
    return timing


def _reset_rss_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_peak() -> int:
    """Peak resident set in bytes: VmHWM where /proc has it, else ``ru_maxrss`` (never reset)."""
    hwm = read_proc_fields("/proc/self/status").get("VmHWM")  # ["123456 kB"]
    if hwm:
        return int(hwm[0].split()[0]) * 1024
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def timm_reference(num_classes: int) -> tuple[Callable[[], nn.Module] | None, str]:
    """A factory for timm's ``legacy_xception`` (random init), or None and why it is unavailable."""
    try:
        import timm
    except ImportError as exc:
        return None, f"timm is not importable here ({exc}); install timm to measure the reference"
    if not timm.list_models("legacy_xception"):
        return None, f"timm {timm.__version__} has no legacy_xception"
    return (lambda: timm.create_model("legacy_xception", pretrained=False, num_classes=num_classes)), ""
