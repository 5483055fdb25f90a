"""``xbuild bench``: parse options, run :func:`exporters.bench.bench_spec`, print a table (and JSON).

Thin on purpose (click style): the measuring is in :mod:`exporters.bench` and the modules it uses;
errors are raised as :class:`XBuildError` and turned into a message and exit code by the ``xbuild``
group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from exporters.bench import bench_spec, count_tasks
from exporters.bench_backends import BACKENDS
from exporters.bench_timing import BenchReport, BenchSettings
from xception_build.cli import EXIT_CODES_HELP, set_option
from xception_build.errors import UserError

_EPILOG = """\b
Examples:
  xbuild bench specs/xception.yaml --device cpu
  xbuild bench specs/xception.yaml --device cuda --batch 1,8,64 --train --json bench.json
  xbuild bench specs/xception_cifar.yaml --device cpu --backends torch,compile --train

\b
Backends this machine lacks (TensorRT without a GPU, timm for the reference rows) are listed
as unavailable with the reason. Timings are wall-clock per call after warm-up, with the device
synchronised; each row repeats until --min-reps calls and --budget seconds have passed.

""" + EXIT_CODES_HELP


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise UserError(f"--batch {text!r}: expected comma-separated positive integers, e.g. 1,8,64")
    return values


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise UserError(f"--backends {text!r}: unknown {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(BACKENDS)}")
    return names


@click.command("bench", epilog=_EPILOG)
@click.argument("spec")
@click.option("--weights", default=None, metavar="FILE",
              help="Weights to load (speed does not depend on them).")
@set_option
@click.option("--batch", "batch_text", default=None, metavar="N,N,...",
              help="Batch sizes.  [default: 1,8 on cpu; 1,8,64 on cuda]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Where to run.  [default: cuda when visible, else cpu]")
@click.option("--backends", "backend_text", default=",".join(BACKENDS), show_default=True,
              help="Comma-separated inference backends.")
@click.option("--train", is_flag=True,
              help="Also time training steps (fp32, bf16/fp16, channels_last, compile, all).")
@click.option("--train-batch", type=int, default=None,
              help="Batch of the training rows.  [default: largest --batch]")
@click.option("--no-reference", is_flag=True, help="Skip timm legacy_xception rows in --train.")
@click.option("--json", "json_path", default=None, metavar="FILE", help="Also write every figure as JSON.")
@click.option("--budget", type=float, default=1.0, show_default=True, help="Seconds of timed calls per row.")
@click.option("--min-reps", type=int, default=5, show_default=True, help="Timed calls per row, at least.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed calls before timing.")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch and onnxruntime.  [default: their own defaults]")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def bench_command(spec: str, weights: str | None, overrides: tuple[str, ...], batch_text: str | None,
                  device: str | None, backend_text: str, train: bool, train_batch: int | None,
                  no_reference: bool, json_path: str | None, budget: float, min_reps: int, warmup: int,
                  threads: int | None, no_progress: bool) -> None:
    """Measure inference latency/throughput per backend and batch (and training speed with --train).

    Prints analytic figures (MACs, bytes, arithmetic intensity) next to the measured ones and the
    fraction of the device's peak they reach.
    """
    import torch
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    batches = _batches(batch_text or ("1,8,64" if device == "cuda" else "1,8"))
    if train_batch is not None and train_batch < 1:
        raise UserError(f"--train-batch {train_batch}: expected a positive integer")
    settings = BenchSettings(device=device, batches=batches, backends=_backends(backend_text),
                             warmup=warmup, min_reps=min_reps, budget_s=budget, train=train,
                             train_batch=train_batch, reference=not no_reference, threads=threads)
    bar = tqdm(total=count_tasks(settings), file=sys.stderr, disable=no_progress, unit="row", leave=False)
    started = [False]

    def on_task(name: str) -> None:
        if started[0]:
            bar.update(1)
        started[0] = True
        bar.set_description(name)

    try:
        report = bench_spec(spec, settings, overrides=overrides, weights=weights, on_task=on_task)
    finally:
        bar.close()
    click.echo(format_report(report))
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise UserError(f"--json {json_path}: cannot write: {exc.strerror}") from exc
        click.echo(f"wrote {json_path}")


# ------------------------------------------------------------------------------------- formatting


def _si(value: float | None, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}".rstrip()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned columns; a row of three cells (key, key, note) prints the note across the rest."""
    full = [r for r in [header, *rows] if len(r) == len(header)]
    widths = [max(len(r[i]) for r in full) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lead = "  ".join(f"{{:<{w}}}" for w in widths[:2])
    return [fmt.format(*r).rstrip() if len(r) == len(header) else f"{lead.format(*r[:2])}  {r[2]}"
            for r in [header, *rows]]


def format_report(report: BenchReport) -> str:
    """The human-readable report: environment, analytic figures, inference and training tables."""
    env, an, peak = report.environment, report.analytic, report.peak
    lines = [f"xbuild bench {env.get('label', '')}",
             f"device: {env['device']} ({env['device_name']}), {env['threads']} torch threads, "
             f"torch {env['torch']}, onnxruntime {env.get('onnxruntime') or '-'}, "
             f"load average {env.get('load_average', '-')}",
             f"analytic per image at {an['input_size']}: {_si(an['params'])} params "  # type: ignore[arg-type]
             f"({_si(an['param_bytes'], 'B')} fp32), {_si(an['macs'], 'MAC')}, "  # type: ignore[arg-type]
             f"activations {_si(an['activation_bytes'], 'B')}, "  # type: ignore[arg-type]
             f"arithmetic intensity {an['arithmetic_intensity']:.1f} FLOP/B"]
    if peak:
        flops = ", ".join(f"{k} {_si(v, 'FLOP/s')}" for k, v in peak["flops"].items())  # type: ignore[attr-defined]
        lines.append(f"peak: {peak['name']}: {flops}; bandwidth {_si(peak['bandwidth'], 'B/s')} "  # type: ignore[arg-type]
                     f"({peak['source']})")
    else:
        lines.append("peak: this GPU is not in the table (xception_build.analysis.KNOWN_GPUS): no % of peak")
    rows = []
    for r in report.inference:
        if r.status != "ok":
            rows.append([r.backend, str(r.batch), f"{r.status}: {r.reason}"])
            continue
        rows.append([r.backend, str(r.batch), _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.min_ms), f"{r.images_per_s:.1f}",
                     str(r.reps), f"{r.setup_s:.1f}", _pct(r.fraction_flops), _pct(r.fraction_bandwidth)])
    lines += ["", "inference (fp32 weights; img/s = batch / p50; onnxruntime/tensorrt rows include "
                  "host<->device copies)"]
    lines += _table(["backend", "batch", "p50 ms", "p90 ms", "min ms", "img/s", "reps", "setup s",
                     "%peak FLOP/s", "%peak B/s"], rows)
    if report.train:
        batch = report.train[0].batch
        lines += ["", f"training step (batch {batch}, synthetic data, forward+loss+backward+SGD; "
                      "FLOPs taken as 3x forward)"]
        rows = []
        for t in report.train:
            if t.status != "ok":
                rows.append([t.config, t.model, f"{t.status}: {t.reason}"])
                continue
            ratio = "-" if t.vs_reference is None else f"{t.vs_reference:.2f}x"
            rows.append([t.config, t.model, _ms(t.p50_ms), _ms(t.min_ms), f"{t.images_per_s:.1f}", str(t.reps),
                         _si(t.peak_memory_bytes, "B"), ratio, _pct(t.fraction_flops)])
        lines += _table(["config", "model", "p50 ms", "min ms", "img/s", "reps", "peak mem", "vs timm",
                         "%peak FLOP/s"], rows)
        kinds = sorted({r.memory_kind for r in report.train if r.memory_kind})
        lines += [f"peak mem: {k}" for k in kinds]
    return "\n".join(lines)
