"""``xbuild export`` and ``xbuild verify``: parse options, call the library, print.

The ``main`` group in ``xception_build.cli`` finds these through the ``xbuild.commands`` entry
points and turns every ``XBuildError`` into ``error: ...`` and its exit code, so the commands
only raise. ``bench`` is ``exporters.bench.cli:bench_command``, its own entry point, so a broken
bench install costs that command only (the group reports it as unavailable, exit 3).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from exporters.calibration import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_EVALUATION_IMAGES,
    DataSource,
)
from exporters.contract import (
    INT8_ACTIVATIONS_CHOICES,
    BackendName,
    BatchProfile,
    BatchSelection,
    Int8ActivationsChoice,
    OpenVINOPrecision,
    Precision,
)
from exporters.options import (
    backend_option,
    batch_option,
    explain_option,
    openvino_precision_option,
    report_option,
    summary_option,
    tolerance_option,
)
from xception_build.cli import EXIT_CODES_HELP, json_option, set_option
from xception_build.errors import UserError
from xception_build.files import check_output_file

if TYPE_CHECKING:
    from exporters.verify.checks import VerificationResult


@click.command("export", short_help="Export a spec to ONNX, OpenVINO and/or TensorRT, verified against PyTorch.",
               epilog=f"""\b
Examples:
  xbuild export specs/xception.yaml --out build/
  xbuild export specs/xception_cifar.yaml --weights cifar.safetensors --batch 1:32:64 --out build/cifar
  xbuild export specs/xception.yaml --onnx --trt --precision fp16 --batch 1:8:32 --out build/trt
  xbuild export specs/xception.yaml --openvino --precision int8 --calib ~/data/imagenet --out build/ov
  xbuild export specs/xception_cifar.yaml --weights cifar.safetensors --precision int8 --calib ~/data/cifar10
  xbuild export specs/xception.yaml --out build/ --summary "$GITHUB_STEP_SUMMARY"

{EXIT_CODES_HELP}""")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--weights", type=click.Path(path_type=Path),
              help="Weights (.safetensors or torch state dict, ours or timm's); default: seeded init.")
@set_option
@click.option("--onnx", "want_onnx", is_flag=True,
              help="Write the ONNX artifact(s): model.onnx (and model.fp16.onnx with --precision fp16). "
                   "The default when neither --onnx nor --trt is given.")
@click.option("--trt", "want_trt", is_flag=True,
              help="Build a TensorRT engine, model.plan, from the exported ONNX. Without --onnx the ONNX is "
                   "an intermediate and not kept.")
@click.option("--openvino", "want_openvino", is_flag=True,
              help="Write OpenVINO IR (model.xml + model.bin, and model.int8.xml/.bin or model.fp16.xml/.bin with "
                   "--precision) made from the exported ONNX, verified on openvino-cpu. Without --onnx the ONNX is "
                   "an intermediate and not kept.")
@openvino_precision_option("--openvino: the inference precision OpenVINO verifies the IR at (recorded in the "
                           "manifest; xbuild verify uses it again).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16 also writes model.fp16.onnx, int8 a QDQ model.int8.onnx (needs --calib); --trt builds "
                   "the engine of that precision.")
@click.option("--calib", metavar="DATA|synthetic",
              help="int8: the data folder (CIFAR-10, or an image folder with train/ and val/) whose training "
                   "images calibrate the activation ranges and whose held-out images judge the result; "
                   "'synthetic' only where no data exists.")
@click.option("--calib-size", type=click.IntRange(min=1), default=DEFAULT_CALIBRATION_IMAGES, show_default=True,
              help="int8: calibration images.")
@click.option("--eval-size", type=click.IntRange(min=1), default=DEFAULT_EVALUATION_IMAGES, show_default=True,
              help="int8: held-out images the int8 artifact is judged on.")
@click.option("--int8-activations", type=click.Choice(INT8_ACTIVATIONS_CHOICES), default="auto",
              show_default=True,
              help="int8: symmetric int8 (what TensorRT reads: the same file serves --trt) or asymmetric uint8 "
                   "(ONNX Runtime only, faster on CPUs); auto picks symmetric with --trt, asymmetric without "
                   "(docs/EXPORT.md).")
@click.option("--judge-synthetic", is_flag=True,
              help="int8 with --calib synthetic: judge top-1 agreement on the synthetic images (exit 0 or 1) "
                   "instead of the verdict \"not judged\" (exit 4); their agreement says little about real data.")
@click.option("--calib-exclude", multiple=True, metavar="BLOCK",
              help="int8: keep this block in float (a module name such as middle.blocks.3, or a spec path such "
                   "as middle.blocks[0] for all its repeats; repeatable).")
@batch_option("Batch profile of the artifacts; verification runs MIN, OPT and MAX.  [default: 1:8:16]")
@click.option("--static-batch", is_flag=True, help="Fix the batch size in the graph (--batch N; default 1).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (18 or newer).")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              help="Output folder; its previous export is replaced only once the new one is complete.")
@click.option("--workspace-gib", type=float, default=4.0, show_default=True, help="TensorRT workspace limit.")
@explain_option
@tolerance_option
@report_option("Also write the HTML report here, whatever the verdict (OUT/report.html is always written with "
               "the installed files; an export that nothing here could check installs nothing).")
@summary_option
@json_option
def export_command(spec: Path, weights: Path | None, overrides: Sequence[str], want_onnx: bool,
                   want_trt: bool, want_openvino: bool, openvino_precision: OpenVINOPrecision, precision: Precision,
                   calib: str | None, calib_size: int, eval_size: int,
                   int8_activations: Int8ActivationsChoice, judge_synthetic: bool, calib_exclude: tuple[str, ...],
                   batch: BatchSelection | None, static_batch: bool,
                   opset: int, out: Path, workspace_gib: float, explain: bool, tolerances: dict[str, float],
                   report: Path | None, summary: Path | None, as_json: bool) -> None:
    """Export SPEC to ONNX, OpenVINO IR and/or TensorRT, verify it against PyTorch, write a manifest.

    Writes OUT/model.onnx (with --onnx, the default), OUT/model.xml and model.bin (with --openvino),
    OUT/model.plan and model.plan.json (with --trt), OUT/spec.resolved.yaml,
    OUT/weights.safetensors (the reference the artifacts were verified against), OUT/manifest.json
    and OUT/report.html. The same seeded inputs at the batch profile's MIN, OPT and MAX go through
    PyTorch and every backend here; the verification table is printed.
    """
    from exporters.pipeline import DEFAULT_PROFILE, ExportFormat, ExportRequest, check_request, run_export
    from exporters.verify.checks import ChecksFailed, ChecksNotJudged, NotVerified

    profile = batch.profile if batch is not None else (BatchProfile(1, 1, 1) if static_batch else DEFAULT_PROFILE)
    if not (math.isfinite(workspace_gib) and workspace_gib > 0):
        raise UserError(f"--workspace-gib {workspace_gib}: must be a finite number > 0")
    formats: set[ExportFormat] = set()
    if want_onnx or not (want_trt or want_openvino):
        formats.add("onnx")
    if want_trt:
        formats.add("tensorrt")
    if want_openvino:
        formats.add("openvino")
    request = ExportRequest(spec=spec, out=out, weights=weights, overrides=tuple(overrides),
                            formats=frozenset(formats), precision=precision, profile=profile,
                            static_batch=static_batch, opset=opset, tolerance=tuple(tolerances.items()),
                            workspace_bytes=int(workspace_gib * (1 << 30)), calib_exclude=tuple(calib_exclude),
                            int8_activations=int8_activations, explain=explain, report=report, summary=summary,
                            openvino_precision=openvino_precision, judge_synthetic=judge_synthetic,
                            calib=None if calib is None else DataSource(calib, calib_size, eval_size))
    check_request(request)  # TensorRT present, --out, --report and --summary usable: before "exporting" is said
    click.echo(f"exporting {spec} to {out}/ (batch profile {profile}) ...", err=True)
    try:
        result = run_export(request)
    except (ChecksFailed, NotVerified, ChecksNotJudged) as exc:  # the whole report; the group prints the error
        click.echo(json.dumps(exc.result.to_dict(), indent=2) if as_json else exc.result.report())
        raise
    if as_json:
        click.echo(result.manifest.model_dump_json(indent=2))
        return
    click.echo(result.verification.report())
    files = ", ".join(a.path for a in result.manifest.artifacts)
    click.echo(f"\nexported {spec} -> {out}/ ({files}, manifest.json, report.html): verification passed")


@click.command("verify", short_help="Re-check an export folder, or an .onnx against a spec.", epilog=f"""\b
Examples:
  xbuild verify build/
  xbuild verify build/ --backend onnxruntime-cpu --junit reports/verify.xml
  xbuild verify build/ --report reports/verify.html --summary "$GITHUB_STEP_SUMMARY"
  xbuild verify --onnx other/model.onnx --spec specs/xception.yaml --weights xception.safetensors

{EXIT_CODES_HELP}""")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--junit", type=click.Path(path_type=Path), help="Also write the results as JUnit XML here.")
@report_option("Write the HTML report here, whatever the verdict (nothing is written into the export folder).")
@summary_option
@click.option("--onnx", "onnx_file", type=click.Path(path_type=Path),
              help="Verify this .onnx (from anywhere) against --spec and --weights instead of a folder.")
@click.option("--spec", type=click.Path(path_type=Path), help="Spec the --onnx file should implement.")
@click.option("--weights", type=click.Path(path_type=Path), help="Weights for --spec (default: seeded init).")
@set_option
@batch_option("Batch sizes for --onnx (default: the file's own profile).")
@backend_option("Run only these backends (default: every one this machine has).")
@explain_option
@click.option("--data", metavar="DATA|synthetic",
              help="int8 artifacts: read their held-out images from this folder (default: where the manifest "
                   "says; required with an int8 --onnx file).")
@openvino_precision_option("openvino-cpu: the inference precision to verify OpenVINO IR at.  [default: what "
                           "the manifest records]", default=None)
@click.option("--eval-size", type=click.IntRange(min=1),
              help=f"With an int8 --onnx file and --data: held-out images to judge it on "
                   f"[default: {DEFAULT_EVALUATION_IMAGES}] (a folder uses its manifest's count).")
@click.option("--judge-synthetic", is_flag=True,
              help="int8 judged on synthetic images: judge top-1 agreement on them (exit 0 or 1) instead of the "
                   "verdict \"not judged\" (exit 4).")
@tolerance_option
@json_option
def verify_command(directory: Path | None, junit: Path | None, report: Path | None, summary: Path | None,
                   onnx_file: Path | None, spec: Path | None,
                   weights: Path | None, overrides: Sequence[str], batch: BatchSelection | None,
                   backends: tuple[BackendName, ...], explain: bool, data: str | None,
                   openvino_precision: OpenVINOPrecision | None, eval_size: int | None,
                   judge_synthetic: bool, tolerances: dict[str, float], as_json: bool) -> None:
    """Re-check an export folder (DIRECTORY) or a user-brought --onnx file.

    For a folder: re-hash every artifact in its manifest.json (an edited, swapped or missing file
    is named as such), rebuild the PyTorch model from spec.resolved.yaml and weights.safetensors,
    and re-run the numeric checks on every backend this machine has; the ones it cannot run are
    listed with the reason. With --onnx: check that file against --spec and --weights, and on
    failure name the weights that differ.
    """
    from exporters.verify.directory import verify_directory
    from exporters.verify.onnx_file import verify_onnx_file
    from exporters.verify.report import check_report_options

    if (directory is None) == (onnx_file is None):
        raise UserError("give an export folder DIRECTORY, or --onnx FILE with --spec SPEC (not both)")
    if junit is not None:
        check_output_file(junit, "--junit")
    check_report_options(report, summary)
    if onnx_file is not None:
        if openvino_precision is not None:
            raise UserError("--openvino-precision goes with an export folder that has OpenVINO IR, not with --onnx")
        if spec is None:
            raise UserError("--onnx needs --spec SPEC (and usually --weights FILE) to compare against")
        if eval_size is not None and data is None:
            raise UserError("--eval-size goes with --data: the held-out images an int8 file is judged on")
        source = None if data is None else DataSource(data, evaluation_images=eval_size or DEFAULT_EVALUATION_IMAGES)
        result = verify_onnx_file(onnx_file, spec, weights, overrides=overrides,
                                  batches=batch.sizes if batch is not None else None, tolerance=tolerances,
                                  backends=backends or None, data=source, explain=explain,
                                  judge_synthetic=judge_synthetic)
    else:
        if spec or weights or overrides or batch or tolerances or eval_size:
            raise UserError("--spec, --weights, --set, --batch, --tolerance and --eval-size go with --onnx; "
                            "a folder is verified with the settings in its manifest")
        assert directory is not None
        result = verify_directory(directory, backends=backends or None, data=data, explain=explain,
                                  openvino_precision=openvino_precision, judge_synthetic=judge_synthetic)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.report())
    if junit is not None:
        from exporters.verify.junit import write_junit

        write_junit(result, junit, name=str(onnx_file or directory))
    if report is not None or summary is not None:
        _write_verify_reports(result, report, summary, directory, onnx_file, spec, weights, overrides)
    result.raise_for_verdict()
    if not as_json:
        click.echo("verification passed")


def _write_verify_reports(result: VerificationResult, report: Path | None, summary: Path | None,
                          directory: Path | None, onnx_file: Path | None, spec: Path | None, weights: Path | None,
                          overrides: Sequence[str]) -> None:
    """--report and --summary of ``xbuild verify``: what was verified, with the versions of this run."""
    from exporters.manifest import library_versions, read_manifest
    from exporters.verify.report import context_of_manifest, context_of_onnx_file, html_report, write_report
    from exporters.verify.summary import append_summary, markdown_summary

    if onnx_file is not None:
        assert spec is not None
        context = context_of_onnx_file(onnx_file, spec, overrides, weights, library_versions())
    else:
        assert directory is not None
        context = context_of_manifest(read_manifest(directory), title=f"xbuild verify {directory}",
                                      versions=library_versions())
    if report is not None:
        write_report(report, html_report(result, context))
    if summary is not None:
        append_summary(summary, markdown_summary(result, context))


__all__ = ["export_command", "verify_command"]
