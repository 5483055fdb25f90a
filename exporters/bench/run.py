"""Inference and training benchmarks, every backend measured side by side in one run.

Why in one run: figures taken on different days, machines or loads do not compare. One process
times the backends of :mod:`exporters.backends` (PyTorch eager and compiled, ONNX Runtime,
TensorRT) on the same inputs, with warm-up, device synchronisation and an adaptive number of
repetitions; a backend this machine lacks becomes a row saying why, never a silent gap.
``--train`` times the training step of :mod:`xception_build.training` under each GPU lever and,
where timm is importable, the same step on timm's ``legacy_xception`` (the reference the compiled
model must keep up with).

This module runs the whole measurement: inference rows from :mod:`.inference`, training rows
from :mod:`.train`, timed by :mod:`.timing`; the CLI (:mod:`.cli`) only formats what
:func:`run_bench` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import torch
from torch import nn

from exporters.bench.analysis import analyse
from exporters.bench.blocks import BlocksReport, profile_blocks
from exporters.bench.inference import bench_inference
from exporters.bench.peaks import device_peak
from exporters.bench.timing import BenchReport, BenchSettings, Progress, environment
from exporters.bench.train import TRAIN_CONFIG_NAMES, bench_train, timm_reference
from xception_build.errors import BackendUnavailable
from xception_build.training import resolve_device

if TYPE_CHECKING:
    from xception_build.model import XceptionNet
    from xception_build.plan import Plan


def count_tasks(settings: BenchSettings) -> int:
    """How many progress steps :func:`run_bench` reports (for a progress bar's total)."""
    train = 2 * len(TRAIN_CONFIG_NAMES) if settings.train else 0
    return len(settings.backends) * len(settings.precisions) * len(settings.batches) + train


def run_bench(make_model: Callable[[], nn.Module], input_size: tuple[int, int, int], num_classes: int,
              settings: BenchSettings, *, label: str = "", on_task: Progress | None = None,
              make_reference: Callable[[], nn.Module] | None = None,
              reference_unavailable: str = "") -> BenchReport:
    """Measure everything ``settings`` asks for; ``on_task(name)`` is called as each measurement starts.

    Raises :class:`BackendUnavailable` when not one requested backend (or training device) can run here:
    a report of "unavailable" rows only would read as a successful benchmark.
    """
    device = resolve_device(settings.device)
    saved = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if settings.threads:
        torch.set_num_threads(settings.threads)
    # Fixed shapes: let cuDNN time its kernels once, as any GPU training script would (both models).
    torch.backends.cudnn.benchmark = True
    report_task = on_task or (lambda _n: None)
    try:
        model = make_model().eval()
        figures = analyse(model, input_size)
        peak = device_peak(device)
        report = BenchReport(environment(device, label), figures.to_dict(),
                             None if peak is None else asdict(peak), asdict(settings))
        report.inference = bench_inference(model, input_size, settings, figures, report_task)
        if settings.train:
            batch = settings.train_batch or max(settings.batches)
            report.train = bench_train(make_model, input_size, num_classes, device, batch, settings, figures,
                                       on_task=report_task, make_reference=make_reference,
                                       reference_unavailable=reference_unavailable)
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.benchmark = saved[1]
    if report.inference and not settings.train and all(r.status == "unavailable" for r in report.inference):
        reasons = sorted({f"{r.backend}: {r.reason}" for r in report.inference})
        raise BackendUnavailable("none of the requested backends can run here; " + "; ".join(reasons))
    return report


def run_blocks(model: XceptionNet, settings: BenchSettings, *, label: str = "",
               on_task: Progress | None = None) -> BlocksReport:
    """Time every spec block of ``model`` (``xbuild bench --blocks``) on each requested backend.

    Raises :class:`BackendUnavailable` when not one requested backend can be profiled here.
    """
    device = resolve_device(settings.device)
    saved = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        model = model.eval()
        peak = device_peak(device)
        report = BlocksReport(environment(device, label), analyse(model).to_dict(),
                              None if peak is None else asdict(peak), asdict(settings))
        report.profiles = profile_blocks(model, settings, on_task or (lambda _n: None))
    finally:
        torch.set_num_threads(saved)
    if all(p.status in ("unavailable", "unsupported", "skipped") for p in report.profiles):
        reasons = sorted({f"{p.backend}: {p.reason}" for p in report.profiles})
        raise BackendUnavailable("none of the requested backends can be profiled per block here; "
                                 + "; ".join(reasons))
    return report


def bench_spec(spec_path: str, settings: BenchSettings, *, overrides: Sequence[str] = (),
               weights: str | None = None, on_task: Progress | None = None) -> BenchReport:
    """Build the spec's model (with ``weights`` if given) and run :func:`run_bench` on it."""
    plan, digest, make_model = _spec_model(spec_path, overrides, weights)
    input_size, num_classes = plan.input_shape.as_tuple(), plan.head.num_classes
    reference, why = timm_reference(num_classes) if settings.train and settings.reference else (None, "")
    if settings.train and not settings.reference:
        why = "--no-reference given"
    report = run_bench(make_model, input_size, num_classes, settings,
                       label=f"{spec_path} ({digest[:12]})", on_task=on_task,
                       make_reference=reference, reference_unavailable=why)
    _record_spec(report.environment, spec_path, digest, weights)
    return report


def blocks_spec(spec_path: str, settings: BenchSettings, *, overrides: Sequence[str] = (),
                weights: str | None = None, on_task: Progress | None = None) -> BlocksReport:
    """Build the spec's model (with ``weights`` if given) and run :func:`run_blocks` on it."""
    _plan, digest, make_model = _spec_model(spec_path, overrides, weights)
    report = run_blocks(make_model(), settings, label=f"{spec_path} ({digest[:12]})", on_task=on_task)
    _record_spec(report.environment, spec_path, digest, weights)
    return report


def _spec_model(spec_path: str, overrides: Sequence[str], weights: str | None
                ) -> tuple[Plan, str, Callable[[], XceptionNet]]:
    """The spec's plan, its hash and a function building its model (with ``weights`` if given).

    The plan is made first (shapes only, no model): an impossible spec fails here, before any work."""
    from xception_build import build_model, load_spec, plan_spec
    from xception_build.spec import spec_hash
    from xception_build.weights import load_weights

    spec = load_spec(spec_path, overrides=list(overrides))

    def make_model() -> XceptionNet:
        model = build_model(spec, seed=0)
        if weights:
            load_weights(model, weights)
        return model

    return plan_spec(spec), spec_hash(spec), make_model


def _record_spec(env: dict[str, object], spec_path: str, digest: str, weights: str | None) -> None:
    env["spec"] = spec_path
    env["spec_hash"] = digest
    env["weights"] = weights
