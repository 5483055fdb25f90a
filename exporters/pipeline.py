"""``xbuild export`` as a library call: spec (+ weights) -> verified artifacts + manifest in DIR.

The formats are the user's choice: the ONNX file (``onnx``), a TensorRT plan (``tensorrt``), or
both. A plan is always built from the exported ONNX; without ``onnx`` that file is an intermediate
that is not installed (the plan's sidecar records its sha256).

The output folder is never left half-written. Everything is written into a temporary folder
inside DIR and verified there; only then are the files renamed into place (same filesystem, so
each rename is atomic), the old manifest having been removed first and the new one written last.
A failure before that point -- a spec that does not compile, weights that do not fit, an
unwritable folder, a crash -- leaves DIR exactly as it was. A crash during the renames leaves no
manifest, which ``xbuild verify`` reports as an incomplete export rather than trusting stale hashes.

The folder's ``report.html`` (:mod:`exporters.verify.report`) describes the files installed with it,
so it is installed with them; ``--report FILE`` and ``--summary FILE`` are written whatever the
verdict, also when an export that nothing here could check installs nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from exporters.calibration import SYNTHETIC_WARNING, DataSource, HeldOut, load_images
from exporters.contract import (
    INPUT_NAME,
    META_PRECISION,
    META_SPEC_HASH,
    META_SPEC_NAME,
    OUTPUT_NAME,
    BatchProfile,
    ComputePrecision,
    Int8Activations,
    Int8ActivationsChoice,
    OpenVINOPrecision,
    Precision,
    RunSettings,
    int8_activations_for,
    model_kind,
)
from exporters.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Artifact,
    DataInfo,
    Manifest,
    ModelInfo,
    SpecInfo,
    TensorInfo,
    VerificationInfo,
    describe,
    library_versions,
    read_manifest,
    write_manifest,
)
from exporters.onnx.export import DEFAULT_OPSET, check_export_options, export_onnx, serialize, to_fp16
from exporters.onnx.quantize import (
    channel_warnings,
    quantize_int8,
    require_quantization_tooling,
)
from exporters.runner import TorchRunner
from exporters.verify.checks import Target, VerificationResult, run_checks
from exporters.verify.compare import DEFAULT_TOLERANCES, RULE, Tolerance, tolerance_for
from exporters.verify.diagnosis import explain_targets
from exporters.verify.reference import reference_model
from exporters.verify.report import (
    REPORT_NAME,
    ReportContext,
    check_report_options,
    context_of_manifest,
    html_report,
    write_report,
)
from exporters.verify.summary import append_summary, markdown_summary
from xception_build.errors import UserError
from xception_build.files import Staging, check_output_folder, staged_output
from xception_build.model import XceptionNet
from xception_build.plan import Plan
from xception_build.spec import Spec, dump_resolved_yaml, load_spec, resolved_data, spec_hash
from xception_build.weights import save_weights

ONNX_NAME = "model.onnx"
#: the ONNX file of each reduced precision, written beside model.onnx
REDUCED_ONNX_NAMES: dict[Precision, str] = {"fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
#: the OpenVINO IR of each precision: the .xml named here and its .bin beside it
IR_NAMES: dict[Precision, str] = {"fp32": "model.xml", "fp16": "model.fp16.xml", "int8": "model.int8.xml"}
PLAN_NAME, TIMING_CACHE_NAME = "model.plan", "timing.cache"
WEIGHTS_NAME, SPEC_NAME = "weights.safetensors", "spec.resolved.yaml"
DEFAULT_PROFILE = BatchProfile(1, 8, 16)

ExportFormat = Literal["onnx", "tensorrt", "openvino"]


@dataclass(frozen=True)
class ExportRequest:
    """What ``xbuild export`` was asked for, already parsed."""

    spec: Path
    out: Path
    weights: Path | None = None
    overrides: tuple[str, ...] = ()
    formats: frozenset[ExportFormat] = frozenset({"onnx"})
    precision: Precision = "fp32"
    profile: BatchProfile = DEFAULT_PROFILE
    static_batch: bool = False
    opset: int = DEFAULT_OPSET
    tolerance: tuple[tuple[str, float], ...] = ()  # --tolerance NAME=VALUE for the precision asked for
    seed: int = 0
    workspace_bytes: int = 4 << 30
    calib: DataSource | None = None  # int8: calibration and held-out images
    calib_exclude: tuple[str, ...] = ()  # int8: module names of blocks kept in float
    int8_activations: Int8ActivationsChoice = "auto"  # int8: resolved by activation_scheme
    explain: bool = False  # block-by-block diagnosis of every artifact, not only of those that fail
    openvino_precision: OpenVINOPrecision = "auto"  # OpenVINO's inference precision when it verifies the IR
    report: Path | None = None  # --report FILE: the HTML report here too (OUT/report.html is always written)
    summary: Path | None = None  # --summary FILE: markdown appended here (a CI job summary)
    judge_synthetic: bool = False  # int8 with --calib synthetic: judge agreement instead of "not judged"

    def __post_init__(self) -> None:
        # Checked here, before the spec is loaded or --out touched: a bad option costs nothing.
        if not self.formats:
            raise UserError("nothing to export: choose --onnx, --trt or both")
        check_export_options(self.profile, static_batch=self.static_batch, opset=self.opset)
        tolerance_for(self.precision, dict(self.tolerance))
        if self.precision == "int8" and self.calib is None:
            raise UserError("--precision int8 needs --calib DATA: the images its activation ranges are "
                            "calibrated on and its agreement is checked on",
                            hint="a CIFAR-10 or image folder as examples/train.py reads; --calib synthetic "
                                 "only where no data exists")
        if self.judge_synthetic and (self.calib is None or not self.calib.synthetic):
            raise UserError("--judge-synthetic goes with --precision int8 --calib synthetic: real held-out images "
                            "are always judged")
        if self.precision != "int8" and (self.calib is not None or self.calib_exclude
                                         or self.int8_activations != "auto"):
            raise UserError("--calib, --calib-size, --eval-size, --calib-exclude and --int8-activations go with "
                            "--precision int8")
        if self.trt and self.int8_activations == "asymmetric":
            raise UserError("--int8-activations asymmetric cannot be built by TensorRT, which reads only symmetric "
                            "int8", hint="drop --trt, or leave --int8-activations at auto (symmetric with --trt)")
        if self.openvino_precision != "auto" and not self.openvino:
            raise UserError("--openvino-precision goes with --openvino")
        if self.workspace_bytes <= 0:
            raise UserError(f"--workspace-gib {self.workspace_bytes / (1 << 30):g}: must be a finite number > 0")

    @property
    def trt(self) -> bool:
        return "tensorrt" in self.formats

    @property
    def openvino(self) -> bool:
        return "openvino" in self.formats

    @property
    def activation_scheme(self) -> Int8Activations:
        """The int8 file's activations: with --trt or --openvino, the symmetric ones its engine or IR is
        built from (the IR is made from the same file, so ONNX Runtime and OpenVINO run one quantization)."""
        return int8_activations_for(self.int8_activations, tensorrt=self.trt, openvino=self.openvino)


@dataclass
class ExportResult:
    directory: Path
    manifest: Manifest
    verification: VerificationResult


@dataclass(frozen=True)
class _Provenance:
    """What the ONNX metadata and the manifest both record, computed once per export."""

    spec_hash: str
    versions: dict[str, str]  # library_versions(), which includes xception-build's own

    @property
    def tool_version(self) -> str:
        return self.versions["xception-build"]


def check_request(request: ExportRequest) -> None:
    """Everything about a request that can be refused before any work: options, TensorRT, --out,
    --report and --summary."""
    if request.trt:
        from exporters.tensorrt.engine import require_tensorrt

        require_tensorrt()  # exit 3 with the folder untouched
    if request.openvino:
        from exporters.openvino.ir import require_openvino

        require_openvino()
    check_output_folder(request.out)
    check_report_options(request.report, request.summary)


def run_export(request: ExportRequest) -> ExportResult:
    """Export, verify and install; raises ``VerificationFailed`` (after installing) when a check fails."""
    check_request(request)
    tolerances = _tolerances(request)
    if request.precision == "int8":
        require_quantization_tooling()
    spec = load_spec(request.spec, request.overrides)
    model = reference_model(spec, request.weights, request.seed)
    excluded = blocks_named(model.plan, request.calib_exclude)
    input_size = model.plan.input_shape.as_tuple()
    provenance = _Provenance(spec_hash(spec), library_versions())
    calibration, held_out = load_images(request.calib, spec) if request.calib is not None else (None, None)
    batches = request.profile.check_batches()
    with staged_output(request.out, ".xbuild-export-") as stage:
        artifacts, builder = _write_artifacts(request, stage, spec, model, provenance, calibration, excluded)
        targets = [Target(stage.path / a.path, kind, a.precision or "fp32") for a in artifacts
                   if (kind := model_kind(a.kind)) is not None]
        result = run_checks(TorchRunner(model, input_size), targets, seed=request.seed, batches=batches,
                            tolerances=tolerances, held_out=held_out, judge_synthetic=request.judge_synthetic,
                            settings=RunSettings(openvino_precision=request.openvino_precision))
        explain_targets(result, targets, model, batches=batches, seed=request.seed, tolerances=tolerances,
                        held_out=held_out, spec=spec, always=request.explain)
        if request.precision == "int8":
            result.notes += channel_warnings(model.plan)
            if request.calib is not None and request.calib.synthetic:
                result.notes.append(SYNTHETIC_WARNING)
        manifest = _manifest(request, spec, model, artifacts, tolerances, result, builder, provenance,
                             held_out, excluded)
        context = context_of_manifest(manifest, title=f"xbuild export {request.spec} -> {request.out}/")
        page = html_report(result, context)
        if result.verdict == "not verified":
            _write_reports(request, result, context, page)  # the report still goes where --report says
            result.raise_for_verdict()  # an artifact nothing here could check: exit 3, folder untouched
        (stage.path / REPORT_NAME).write_text(page, encoding="utf-8")
        _install(stage, [a.path for a in artifacts], manifest, reports=[REPORT_NAME])
    _write_reports(request, result, context, page)
    # failed: installed for inspection, marked failed in the manifest, exit 1; not judged
    # (synthetic images): installed, marked "not judged", exit 4
    result.raise_for_verdict()
    return ExportResult(request.out, manifest, result)


def _write_reports(request: ExportRequest, result: VerificationResult, context: ReportContext, page: str) -> None:
    """``--report FILE`` (unless it is the folder's own report.html) and ``--summary FILE``."""
    if request.report is not None and request.report.resolve() != (request.out / REPORT_NAME).resolve():
        write_report(request.report, page)
    if request.summary is not None:
        append_summary(request.summary, markdown_summary(result, context))


def _write_artifacts(request: ExportRequest, stage: Staging, spec: Spec, model: XceptionNet,
                     provenance: _Provenance, calibration: np.ndarray | None, excluded: Sequence[str]
                     ) -> tuple[list[Artifact], dict[str, Any] | None]:
    """Write every requested file into the staging folder; return the ones to install (described)."""
    input_size = model.plan.input_shape.as_tuple()
    onnx_proto = export_onnx(model, input_size, profile=request.profile, static_batch=request.static_batch,
                             opset=request.opset, metadata=_onnx_metadata(model, spec, provenance),
                             producer_version=provenance.tool_version)
    (stage.path / ONNX_NAME).write_bytes(serialize(onnx_proto))
    onnx_files: list[tuple[str, Precision]] = [(ONNX_NAME, "fp32")]
    if request.precision != "fp32":
        name = REDUCED_ONNX_NAMES[request.precision]
        if request.precision == "fp16":
            reduced = to_fp16(onnx_proto)
        else:
            assert calibration is not None  # ExportRequest requires --calib for int8
            reduced = quantize_int8(onnx_proto, calibration, exclude=excluded, activations=request.activation_scheme)
        (stage.path / name).write_bytes(serialize(reduced))
        onnx_files.append((name, request.precision))
    del onnx_proto
    artifacts: list[Artifact] = []
    if "onnx" in request.formats:
        artifacts += [describe(stage.path, name, "onnx", precision) for name, precision in onnx_files]
    if request.openvino:
        from exporters.openvino.ir import weights_path, write_ir

        for name, precision in onnx_files:
            xml = stage.path / IR_NAMES[precision]
            write_ir(stage.path / name, xml)
            artifacts += [describe(stage.path, xml.name, "openvino-ir", precision),
                          describe(stage.path, weights_path(xml).name, "openvino-weights")]
    builder: dict[str, Any] | None = None
    if request.trt:
        builder = _build_plan(request, stage, input_size)
        artifacts += [describe(stage.path, PLAN_NAME, "tensorrt-plan", request.precision),
                      describe(stage.path, PLAN_NAME + ".json", "tensorrt-sidecar")]
    save_weights(model, stage.path / WEIGHTS_NAME)
    (stage.path / SPEC_NAME).write_text(dump_resolved_yaml(spec), encoding="utf-8")
    artifacts += [describe(stage.path, WEIGHTS_NAME, "weights"), describe(stage.path, SPEC_NAME, "spec")]
    return artifacts, builder


def blocks_named(plan: Plan, names: Sequence[str]) -> list[str]:
    """Module names of the blocks ``names`` mean: a module name (``middle.blocks.3``), or a spec path
    (``middle.blocks[0]``: every repeat of it). An unknown name is a user error with examples."""
    modules: list[str] = []
    for name in names:
        found = [b.module_name for b in plan.blocks if name in (b.module_name, b.spec_path)]
        if not found:
            examples = ", ".join(dict.fromkeys(x for b in plan.blocks[:4] for x in (b.module_name, b.spec_path)))
            raise UserError(f"--calib-exclude {name}: no block of the spec is called that",
                            hint=f"give module names or spec paths as `xbuild compile` lists them, e.g. {examples}")
        modules += [m for m in found if m not in modules]
    return modules


def _tolerances(request: ExportRequest) -> dict[ComputePrecision, Tolerance]:
    """Defaults per compute precision; --tolerance overrides the precision that was asked for (a
    backend that computes an artifact at another precision, e.g. bf16, is judged by that one's defaults)."""
    tolerances = dict(DEFAULT_TOLERANCES)
    tolerances[request.precision] = tolerance_for(request.precision, dict(request.tolerance))
    return tolerances


def _build_plan(request: ExportRequest, stage: Staging, input_size: tuple[int, int, int]) -> dict[str, Any]:
    from exporters.tensorrt.engine import BuildSettings, build_engine, build_recipe, major_version

    recipe = build_recipe(major_version(), request.precision)
    source = REDUCED_ONNX_NAMES.get(recipe.onnx_precision, ONNX_NAME)
    cache = stage.path / TIMING_CACHE_NAME
    if (request.out / TIMING_CACHE_NAME).is_file():
        shutil.copyfile(request.out / TIMING_CACHE_NAME, cache)  # reuse the last build's timings
    settings = BuildSettings(request.profile, input_size, request.precision, request.workspace_bytes)
    return build_engine(stage.path / source, stage.path / PLAN_NAME, settings, timing_cache=cache)


def _onnx_metadata(model: XceptionNet, spec: Spec, provenance: _Provenance) -> dict[str, str]:
    plan, inputs = model.plan, spec.input
    versions = provenance.versions
    return {
        META_SPEC_NAME: spec.name, META_SPEC_HASH: provenance.spec_hash,
        "xbuild.version": versions["xception-build"], "xbuild.torch_version": versions.get("torch", ""),
        "xbuild.onnx_version": versions.get("onnx", ""),
        "xbuild.onnxscript_version": versions.get("onnxscript", ""),
        "xbuild.input_size": ",".join(str(d) for d in plan.input_shape.as_tuple()),
        "xbuild.mean": ",".join(f"{v:g}" for v in inputs.mean),
        "xbuild.std": ",".join(f"{v:g}" for v in inputs.std),
        "xbuild.interpolation": inputs.interpolation,
        "xbuild.crop_pct": f"{inputs.crop_pct:g}",
        "xbuild.num_classes": str(plan.head.num_classes), META_PRECISION: "fp32",
    }


def _manifest(request: ExportRequest, spec: Spec, model: XceptionNet, artifacts: Sequence[Artifact],
              tolerances: dict[ComputePrecision, Tolerance], result: VerificationResult,
              builder: dict[str, Any] | None, provenance: _Provenance, held_out: HeldOut | None,
              excluded: Sequence[str]) -> Manifest:
    plan = model.plan
    calib = request.calib
    data = None if calib is None or held_out is None else DataInfo(
        data=calib.data, calibration_images=calib.calibration_images, evaluation_images=calib.evaluation_images,
        seed=calib.seed, description=held_out.description, fingerprint=held_out.fingerprint)
    input_size = list(plan.input_shape.as_tuple())
    batch: int | str = request.profile.opt if request.static_batch else "N"
    outputs = plan.head.num_classes or plan.num_features
    return Manifest(
        format_version=FORMAT_VERSION,
        tool={"name": "xception-build", "version": provenance.tool_version},
        versions=dict(provenance.versions),
        spec=SpecInfo(hash=provenance.spec_hash, source=str(request.spec), overrides=list(request.overrides),
                      resolved=resolved_data(spec)),
        model=ModelInfo(
            input=TensorInfo(name=INPUT_NAME, shape=[batch, *input_size], dtype="float32"),
            output=TensorInfo(name=OUTPUT_NAME, shape=[batch, outputs], dtype="float32"),
            input_size=input_size, mean=list(spec.input.mean), std=list(spec.input.std),
            interpolation=spec.input.interpolation, crop_pct=spec.input.crop_pct,
            num_classes=plan.head.num_classes, params=sum(p.numel() for p in model.parameters())),
        export={"exporter": "torch.onnx dynamo", "opset": request.opset, "formats": sorted(request.formats),
                "batch_profile": str(request.profile), "static_batch": request.static_batch,
                "precision": request.precision,
                "batchnorm_folded": True, "weights_source": str(request.weights) if request.weights else None,
                "init_seed": request.seed, "tensorrt": builder,
                "openvino": {"precision": request.openvino_precision} if request.openvino else None,
                "int8": None if calib is None else {"calibration": calib.data, "excluded_blocks": list(excluded),
                                                     "activations": request.activation_scheme}},
        artifacts=list(artifacts),
        verification=VerificationInfo(
            reference="pytorch-cpu, eval mode, TF32 off", seed=request.seed,
            batches=list(request.profile.check_batches()), rule=RULE, tolerances=dict(tolerances), data=data,
            judge_synthetic=request.judge_synthetic, verdict=result.verdict, passed=result.passed,
            results=[c.to_dict() for c in result.comparisons],
            not_run=[vars(s) for s in result.skipped], notes=list(result.notes)),
    )


def _install(stage: Staging, names: Sequence[str], manifest: Manifest, reports: Sequence[str] = ()) -> None:
    """Move the staged files into the output folder: old manifest out first, new manifest in last.

    ``reports`` describe the export and are installed with it, but are no artifact of it."""
    out = stage.out
    try:
        old = {a.path for a in read_manifest(out).artifacts}
    except UserError:
        old = set()
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    stage.install([*names, *reports, *([TIMING_CACHE_NAME] if (stage.path / TIMING_CACHE_NAME).exists() else [])])
    for stale in old - set(names):  # files of the previous export that this one does not have
        # only plain names of files in `out`: never "", ".", "..", a path elsewhere, or a folder
        if Path(stale).name != stale or stale in ("", ".", "..", MANIFEST_NAME):
            continue
        path = out / stale
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
    write_manifest(out, manifest)
