"""Inference and training benchmarks, every backend measured side by side in one run.

Why in one run: figures taken on different days, machines or loads do not compare. One process
times torch eager, ``torch.compile``, ONNX Runtime and TensorRT on the same inputs, with warm-up,
device synchronisation and an adaptive number of repetitions; a backend this machine lacks becomes
a row saying why, never a silent gap. ``--train`` times the training step of
:mod:`xception_build.training` under each GPU lever and, where timm is importable, the same step on
timm's ``legacy_xception`` (the reference the compiled model must keep up with).

This module runs the whole measurement: backends from :mod:`exporters.bench_backends`, timed by
:mod:`exporters.bench_timing`, training rows from :mod:`exporters.bench_train`; the CLI
(``exporters.bench_cli``) only formats what :func:`run_bench` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
from torch import nn

from exporters.bench_backends import Unavailable, make_backend
from exporters.bench_timing import (
    BenchReport,
    BenchSettings,
    InferenceRow,
    Progress,
    environment,
    fill_row,
    measure,
    one_line,
)
from exporters.bench_train import TRAIN_CONFIG_NAMES, bench_train, timm_reference
from xception_build.analysis import analyse, device_peak, precision_of
from xception_build.training import resolve_device, synchronize

#: backends whose fp32 runs without TF32 whatever cuDNN's setting: TensorRT engines are built with
#: BuilderFlag.TF32 cleared (exporters.tensorrt_backend), so their % of peak is of the plain fp32 peak
STRICT_FP32_BACKENDS = frozenset({"tensorrt"})


def peak_precision(backend: str, device: torch.device) -> str:
    """The precision whose peak a ``backend`` row on ``device`` is compared with."""
    return "fp32" if backend in STRICT_FP32_BACKENDS else precision_of(device)


def count_tasks(settings: BenchSettings) -> int:
    """How many progress steps :func:`run_bench` reports (for a progress bar's total)."""
    train = 2 * len(TRAIN_CONFIG_NAMES) if settings.train else 0
    return len(settings.backends) * len(settings.batches) + train


def run_bench(make_model: Callable[[], nn.Module], input_size: tuple[int, int, int], num_classes: int,
              settings: BenchSettings, *, label: str = "", on_task: Progress | None = None,
              make_reference: Callable[[], nn.Module] | None = None,
              reference_unavailable: str = "") -> BenchReport:
    """Measure everything ``settings`` asks for; ``on_task(name)`` is called as each measurement starts."""
    device = resolve_device(settings.device)
    saved = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if settings.threads:
        torch.set_num_threads(settings.threads)
    # Fixed shapes: let cuDNN time its kernels once, as any GPU training script would (both models).
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        return _run(make_model, input_size, num_classes, settings, device, label, on_task or (lambda _n: None),
                    make_reference, reference_unavailable)
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.benchmark = saved[1]


def _run(make_model: Callable[[], nn.Module], input_size: tuple[int, int, int], num_classes: int,
         settings: BenchSettings, device: torch.device, label: str, on_task: Progress,
         make_reference: Callable[[], nn.Module] | None, reference_unavailable: str) -> BenchReport:
    model = make_model().eval()
    figures = analyse(model, input_size)
    peak = device_peak(device)
    report = BenchReport(environment(device, label), figures.to_dict(),
                         None if peak is None else asdict(peak), asdict(settings))
    for name in settings.backends:
        precision = peak_precision(name, device)
        backend = None
        setup_error: tuple[str, str] | None = None  # a backend that cannot be set up fails every batch
        for batch in settings.batches:
            on_task(f"{name} batch {batch}")
            row = InferenceRow(name, batch, "ok")
            if setup_error is not None:
                row.status, row.reason = setup_error
                report.inference.append(row)
                continue
            try:
                t0 = time.perf_counter()
                if backend is None:
                    try:
                        backend = make_backend(name, model, device, input_size, settings.batches,
                                               settings.threads)
                    except Unavailable as exc:
                        setup_error = ("unavailable", one_line(exc, with_type=False))
                        raise
                    except Exception as exc:
                        setup_error = ("failed", one_line(exc))
                        raise
                run = backend.runner(batch)
                run()  # first call: compile / session warm-up / engine, counted as setup
                synchronize(device)
                row.setup_s = time.perf_counter() - t0
                timing = measure(run, lambda: synchronize(device), warmup=settings.warmup,
                                 min_reps=settings.min_reps, max_reps=settings.max_reps,
                                 budget_s=settings.budget_s)
                fill_row(row, timing, batch, figures, peak, precision, training=False)
            except Unavailable as exc:
                row.status, row.reason = "unavailable", one_line(exc, with_type=False)
            except Exception as exc:  # a broken backend is a row, not the end of the run
                row.status, row.reason = "failed", one_line(exc)
            report.inference.append(row)
        if backend is not None:
            backend.close()
    if settings.train:
        batch = settings.train_batch or max(settings.batches)
        report.train = bench_train(make_model, input_size, num_classes, device, batch, settings, figures,
                                   on_task=on_task, make_reference=make_reference,
                                   reference_unavailable=reference_unavailable)
    return report


def bench_spec(spec_path: str, settings: BenchSettings, *, overrides: Sequence[str] = (),
               weights: str | None = None, on_task: Progress | None = None) -> BenchReport:
    """Build the spec's model (with ``weights`` if given) and run :func:`run_bench` on it."""
    from xception_build import build_model, load_spec, plan_spec
    from xception_build.spec import spec_hash
    from xception_build.weights import load_weights

    spec = load_spec(spec_path, overrides=list(overrides))
    digest = spec_hash(spec)

    def make_model() -> nn.Module:
        model = build_model(spec, seed=0)
        if weights:
            load_weights(model, weights)
        return model

    plan = plan_spec(spec)  # shapes only, no model; an impossible spec fails here, before any work
    input_size, num_classes = plan.input_shape.as_tuple(), plan.head.num_classes
    reference, why = timm_reference(num_classes) if settings.train and settings.reference else (None, "")
    if settings.train and not settings.reference:
        why = "--no-reference given"
    report = run_bench(make_model, input_size, num_classes, settings,
                       label=f"{spec_path} ({digest[:12]})", on_task=on_task,
                       make_reference=reference, reference_unavailable=why)
    report.environment["spec"] = spec_path
    report.environment["spec_hash"] = digest
    report.environment["weights"] = weights
    return report
