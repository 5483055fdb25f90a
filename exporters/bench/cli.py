"""``xbuild bench``: parse options, run :func:`exporters.bench.run.bench_spec`, print a table (or JSON).

Thin on purpose (click style): the measuring is in :mod:`exporters.bench.run` and the modules it
uses; errors are raised as :class:`XBuildError` and turned into a message and exit code by the
``xbuild`` group.
"""

from __future__ import annotations

import json
import sys

import click

from exporters.bench.blocks import BLOCK_PROFILERS, BlockProfile, BlocksReport, BlockTime
from exporters.bench.run import bench_spec, blocks_spec, count_tasks
from exporters.bench.timing import BenchReport, BenchSettings, InferenceRow, describe_environment
from exporters.contract import (
    INT8_ACTIVATIONS_CHOICES,
    BackendName,
    BatchSelection,
    Device,
    Int8ActivationsChoice,
    OpenVINOPrecision,
)
from exporters.options import backend_option, batch_option, openvino_precision_option
from xception_build.cli import EXIT_CODES_HELP, json_option, set_option
from xception_build.errors import UserError
from xception_build.tables import cite, human_count, render_table

_EPILOG = """\b
Examples:
  xbuild bench specs/xception.yaml --device cpu
  xbuild bench specs/xception.yaml --device cuda --batch 1,8,64 --train --json > bench.json
  xbuild bench specs/xception_cifar.yaml --backend pytorch-cpu,pytorch-compile-cpu --train
  xbuild bench specs/xception.yaml --blocks --backend onnxruntime-cpu --precision fp32,int8 --batch 8

\b
Backends this machine lacks (TensorRT without a GPU, timm for the reference rows) are listed
as unavailable with the reason; when none of the requested backends can run, the exit code is 3.
Timings are wall-clock per call after warm-up, with the device synchronised; each row repeats
until --min-reps calls and --budget seconds have passed.

""" + EXIT_CODES_HELP


@click.command("bench", short_help="Measure latency, throughput and training speed per backend.", epilog=_EPILOG)
@click.argument("spec")
@click.option("--weights", default=None, metavar="FILE",
              help="Weights to load (speed does not depend on them).")
@set_option
@batch_option("Batch sizes to measure.  [default: 1,8 on cpu; 1,8,64 on cuda]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Device of the training rows and of the default backends.  [default: cuda when visible, "
                   "else cpu]")
@backend_option("Inference backends to measure (default: every backend of --device).")
@click.option("--precision", "precision_text", default="fp32", show_default=True, metavar="P[,P...]",
              help="Precisions of the artifacts the onnxruntime, openvino and tensorrt rows run: fp32, fp16, int8 "
                   "(comma-separated; several are timed round-robin, with their speed vs fp32).")
@click.option("--int8-activations", type=click.Choice(INT8_ACTIVATIONS_CHOICES), default="auto",
              show_default=True,
              help="The int8 artifacts' activations, as in xbuild export: auto times the asymmetric file on "
                   "onnxruntime and the symmetric one on tensorrt and openvino-cpu.")
@openvino_precision_option("openvino-cpu rows: OpenVINO's inference precision.")
@click.option("--train", is_flag=True,
              help="Also time training steps (fp32, bf16/fp16, channels_last, compile, all).")
@click.option("--train-batch", type=click.IntRange(min=1), default=None,
              help="Batch of the training rows.  [default: largest --batch]")
@click.option("--no-reference", is_flag=True, help="Skip timm legacy_xception rows in --train.")
@click.option("--blocks", is_flag=True,
              help="Instead of the latency table: the time of every spec block (spec path, YAML line, MACs, "
                   "% of peak) under each backend's profiler, at one batch size (--batch N; default the "
                   "largest default batch), and what could not be given to a block. Backends with a block "
                   f"profiler: {', '.join(BLOCK_PROFILERS)}.")
@json_option
@click.option("--budget", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds of timed calls per row.")
@click.option("--min-reps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed calls per row, at least.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed calls before timing.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and onnxruntime.  [default: their own defaults]")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def bench_command(spec: str, weights: str | None, overrides: tuple[str, ...], batch: BatchSelection | None,
                  device: Device | None, backends: tuple[BackendName, ...], precision_text: str,
                  int8_activations: Int8ActivationsChoice, openvino_precision: OpenVINOPrecision, train: bool,
                  train_batch: int | None,
                  no_reference: bool, blocks: bool, as_json: bool, budget: float, min_reps: int, warmup: int,
                  threads: int | None, no_progress: bool) -> None:
    """Measure inference latency/throughput per backend and batch (and training speed with --train).

    Prints analytic figures (MACs, bytes, arithmetic intensity) next to the measured ones and the
    fraction of the device's peak they reach.
    """
    import torch
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = batch.sizes if batch is not None else ((1, 8, 64) if device == "cuda" else (1, 8))
    if blocks:
        if train:
            raise UserError("--blocks and --train are separate runs: --blocks times inference block by block")
        if batch is None:
            sizes = (max(sizes),)
        elif len(sizes) != 1:
            raise UserError(f"--blocks profiles one batch size, --batch gave {len(sizes)} "
                            f"({', '.join(map(str, sizes))})", hint="give --batch N")
    precisions = tuple(dict.fromkeys(p.strip() for p in precision_text.split(",") if p.strip()))
    settings = BenchSettings(device=device, batches=sizes, backends=backends,
                             precisions=precisions,  # type: ignore[arg-type]  # checked by BenchSettings
                             int8_activations=int8_activations, openvino_precision=openvino_precision,
                             warmup=warmup, min_reps=min_reps, budget_s=budget, train=train,
                             train_batch=train_batch, reference=not no_reference, threads=threads)
    tasks = len(settings.backends) * len(settings.precisions) if blocks else count_tasks(settings)
    bar = tqdm(total=tasks, file=sys.stderr, disable=no_progress, unit="row", leave=False)
    started = [False]

    def on_task(name: str) -> None:
        if started[0]:
            bar.update(1)
        started[0] = True
        bar.set_description(name)

    try:
        if blocks:
            profiled = blocks_spec(spec, settings, overrides=overrides, weights=weights, on_task=on_task)
        else:
            report = bench_spec(spec, settings, overrides=overrides, weights=weights, on_task=on_task)
    finally:
        bar.close()
    if blocks:
        click.echo(json.dumps(profiled.to_dict(), indent=2) if as_json else format_blocks_report(profiled))
    else:
        click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))


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


def _label(row: InferenceRow) -> str:
    """The row's backend and precision, with the activation scheme of an int8 artifact and the
    precision the backend computed at where it is not the artifact's (OpenVINO's bf16)."""
    scheme = f" ({row.int8_activations})" if row.int8_activations else ""
    ran = f" (ran {row.compute_precision})" if row.compute_precision else ""
    return f"{row.backend} {row.precision}{scheme}{ran}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Names left, figures right; a row of three cells (key, key, note) prints the note across the rest."""
    return render_table(header, rows, right=range(2, len(header)))


def _header(report: BenchReport | BlocksReport) -> list[str]:
    """Environment, analytic figures and the peak the figures are compared with."""
    env, an, peak = report.environment, report.analytic, report.peak
    lines = [f"xbuild bench {env.get('label', '')}",
             f"device: {describe_environment(env)}",
             f"analytic per image at {an['input_size']}: {_si(an['params'])} params "  # type: ignore[arg-type]
             f"({_si(an['param_bytes'], 'B')} fp32), {_si(an['macs'], 'MAC')}, "  # type: ignore[arg-type]
             f"activations {_si(an['activation_bytes'], 'B')}, "  # type: ignore[arg-type]
             f"arithmetic intensity {an['arithmetic_intensity']:.1f} FLOP/B"]
    if peak:
        flops = ", ".join(f"{k} {_si(v, 'FLOP/s')}" for k, v in peak["flops"].items())  # type: ignore[attr-defined]
        emulated = peak.get("emulated") or ()
        lines.append(f"peak: {peak['name']}: {flops}; bandwidth {_si(peak['bandwidth'], 'B/s')} "  # type: ignore[arg-type]
                     f"({peak['source']})")
        if emulated:
            lines.append(f"      {', '.join(emulated)} (emulated here): compared with the fp32 peak; "  # type: ignore[arg-type]
                         "expect it no faster than fp32")
    else:
        lines.append("peak: this GPU is not in the table (exporters.bench.peaks.KNOWN_GPUS): no % of peak")
    return lines


def format_report(report: BenchReport) -> str:
    """The human-readable report: environment, analytic figures, inference and training tables."""
    lines = _header(report)
    rows = []
    for r in report.inference:
        if r.status != "ok":
            rows.append([_label(r), str(r.batch), f"{r.status}: {r.reason}"])
            continue
        rows.append([_label(r), str(r.batch), _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.min_ms),
                     f"{r.images_per_s:.1f}", str(r.reps), f"{r.setup_s:.1f}",
                     "-" if r.vs_fp32 is None else f"{r.vs_fp32:.2f}x",
                     "-" if r.vs_baseline is None else f"{r.vs_baseline:.2f}x", _pct(r.fraction_flops),
                     _pct(r.fraction_bandwidth)])
    baseline = next((r.baseline for r in report.inference if r.baseline), "")
    lines += ["", "inference (img/s = batch / p50; onnxruntime/tensorrt rows include host<->device copies; "
                  "every row of a batch size is timed round-robin with the others: vs fp32 = the same backend's "
                  f"fp32 row's p50 / this row's; vs base = the {baseline or 'first backend fp32'} row's p50 / "
                  "this row's)"]
    lines += _table(["backend precision", "batch", "p50 ms", "p90 ms", "min ms", "img/s", "reps", "setup s",
                     "vs fp32", "vs base", "%peak FLOP/s", "%peak B/s"], rows)
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


# ------------------------------------------------------------------------------ time per block

#: rows marked as the slowest, the first ones to look at
SLOWEST = 3


def format_blocks_report(report: BlocksReport) -> str:
    """The header, then one per-block table per (backend, precision)."""
    lines = _header(report)
    for profile in report.profiles:
        lines += ["", *format_block_profile(profile)]
    return "\n".join(lines)


def _block_cells(row: BlockTime, slowest: set[str]) -> list[str]:
    mark = "*" if row.module in slowest else ""
    return [mark, row.module, row.spec_path, f"{row.repeat[0]}/{row.repeat[1]}",
            cite(row.file, row.line, unknown="-" if row.line is None else f"line {row.line}"),
            _ms(row.time_ms), _pct(row.fraction_of_total), human_count(row.macs),
            "-" if row.achieved_flops is None else f"{row.achieved_flops / 1e9:.1f}", _pct(row.fraction_of_peak)]


def format_block_profile(profile: BlockProfile) -> list[str]:
    """One (backend, precision): a row per block in forward order, the slowest marked, then the sums."""
    label = f"{profile.backend} {profile.precision}" + (
        f" ({profile.int8_activations})" if profile.int8_activations else "")
    if profile.status != "ok":
        return [f"{label}, batch {profile.batch}: {profile.status}: {profile.reason}"]
    check, loose = profile.check, profile.unattributed
    assert check is not None and loose is not None  # set for every profile that ran
    timed = sorted((r for r in profile.rows if r.time_ms is not None), key=lambda r: -(r.time_ms or 0.0))
    slowest = {r.module for r in timed[:SLOWEST]}
    emulated = f" ({profile.precision} is emulated here)" if profile.emulated else ""
    lines = [f"{label}, batch {profile.batch}: mean of {profile.calls} profiled calls; {profile.method}; "
             f"% peak: of {_si(profile.peak_flops, 'FLOP/s')}, the {profile.peak_precision} peak{emulated}; "
             f"* = the {SLOWEST} slowest"]
    rows = [_block_cells(r, slowest) for r in profile.rows]
    total = check.total_ms
    rows += [["", "blocks + head", "", "", "", _ms(check.blocks_ms), _pct(check.blocks_ms / total), "", "", ""],
             ["", "unattributed", "", "", "", _ms(loose.time_ms), _pct(loose.time_ms / total), "", "", ""],
             ["", "measured total", "", "", "", _ms(total), _pct(1.0), "", "", ""]]
    lines += render_table(["", "block", "spec", "repeat", "line", "ms", "% total", "MACs/img", "GFLOP/s",
                           "% peak"], rows, right=range(5, 10))
    if loose.kernels:
        shown = ", ".join(f"{k.name} ({k.op_type}) {_ms(k.time_ms)}" for k in loose.kernels[:5])
        kernels = (f"{len(loose.kernels)} kernels in no block, {_ms(sum(k.time_ms for k in loose.kernels))} ms: "
                   + shown + (", ... (all in --json)" if len(loose.kernels) > 5 else ""))
    else:
        kernels = "no kernel outside the blocks"
    lines.append(f"unattributed: {_ms(loose.overhead_ms)} ms {loose.overhead}; {kernels}")
    missing = [r.module for r in profile.rows if r.time_ms is None]
    if missing:
        lines.append(f"no kernel seen for: {', '.join(missing)}")
    verdict = "yes" if check.within else "NO"
    lines.append(f"check: blocks + head + unattributed = {_ms(check.sum_ms)} ms = {_pct(check.fraction)} of the "
                 f"measured total (the profiled calls' wall clock); within the stated {check.tolerance:.0%}: "
                 f"{verdict}")
    return lines
