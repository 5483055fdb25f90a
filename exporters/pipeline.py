"""``xbuild export`` as a library call: spec (+ weights) -> verified artifacts + manifest in DIR.

The output folder is never left half-written. Everything is written into a temporary folder
inside DIR and verified there; only then are the files renamed into place (same filesystem, so
each rename is atomic), the old manifest having been removed first and the new one written last.
A failure before that point -- a spec that does not compile, weights that do not fit, an
unwritable folder, a crash -- leaves DIR exactly as it was. A crash during the renames leaves no
manifest, which ``xbuild verify`` reports as an incomplete export rather than trusting stale hashes.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters.compare import DEFAULT_TOLERANCES, Tolerance, tolerance_for
from exporters.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Artifact,
    Manifest,
    ModelInfo,
    SpecInfo,
    VerificationInfo,
    describe,
    library_versions,
    read_manifest,
    write_manifest,
)
from exporters.onnx_export import DEFAULT_OPSET, check_export_options, export_onnx, serialize, to_fp16
from exporters.runners import INPUT_NAME, OUTPUT_NAME, BatchProfile, TorchRunner
from exporters.verify import Target, VerificationResult, require_some_backend, run_checks
from xception_build.errors import UserError
from xception_build.files import remove_empty, staging_dir

ONNX_NAME, ONNX_FP16_NAME = "model.onnx", "model.fp16.onnx"
PLAN_NAME, TIMING_CACHE_NAME = "model.plan", "timing.cache"
WEIGHTS_NAME, SPEC_NAME = "weights.safetensors", "spec.resolved.yaml"
DEFAULT_PROFILE = BatchProfile(1, 8, 16)
#: errors that mean "this folder cannot take the export", not a bug
_WRITE_ERRORS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT}


@dataclass(frozen=True)
class ExportRequest:
    """What ``xbuild export`` was asked for, already parsed."""

    spec: Path
    out: Path
    weights: Path | None = None
    overrides: tuple[str, ...] = ()
    trt: bool = False
    precision: str = "fp32"
    profile: BatchProfile = DEFAULT_PROFILE
    static_batch: bool = False
    opset: int = DEFAULT_OPSET
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    workspace_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        # Checked here, before the spec is loaded or --out touched: a bad option costs nothing.
        check_export_options(self.profile, static_batch=self.static_batch, opset=self.opset)


@dataclass
class ExportResult:
    directory: Path
    manifest: Manifest
    verification: VerificationResult


def run_export(request: ExportRequest) -> ExportResult:
    """Export, verify and install; raises ``VerificationFailed`` (after installing) when a check fails."""
    from exporters.reference_model import reference_model
    from xception_build import load_spec
    from xception_build.spec import dump_resolved_yaml, spec_hash
    from xception_build.weights import save_weights

    tolerances = _tolerances(request)
    if request.trt:
        from exporters.tensorrt_backend import require_tensorrt

        require_tensorrt()  # before any work: exit 3 with the folder untouched
    spec = load_spec(request.spec, request.overrides)
    model = reference_model(spec, request.weights, request.seed)
    input_size = tuple(int(d) for d in model.pretrained_cfg["input_size"])
    provenance = _Provenance(spec_hash(spec), library_versions())
    staging, created = _staging_dir(request.out)
    installed = False
    try:
        onnx_proto = export_onnx(model, input_size, profile=request.profile,
                                 static_batch=request.static_batch, opset=request.opset,
                                 metadata=_onnx_metadata(model, spec, provenance),
                                 producer_version=provenance.tool_version)
        (staging / ONNX_NAME).write_bytes(serialize(onnx_proto))
        artifacts = [describe(staging, ONNX_NAME, "onnx", "fp32")]
        if request.precision == "fp16":
            (staging / ONNX_FP16_NAME).write_bytes(serialize(to_fp16(onnx_proto)))
            artifacts.append(describe(staging, ONNX_FP16_NAME, "onnx", "fp16"))
        del onnx_proto
        builder: dict[str, Any] | None = None
        if request.trt:
            builder = _build_plan(request, staging, input_size)
            artifacts += [describe(staging, PLAN_NAME, "tensorrt-plan", request.precision),
                          describe(staging, PLAN_NAME + ".json", "tensorrt-sidecar")]
        save_weights(model, staging / WEIGHTS_NAME)
        (staging / SPEC_NAME).write_text(dump_resolved_yaml(spec), encoding="utf-8")
        artifacts += [describe(staging, WEIGHTS_NAME, "weights"), describe(staging, SPEC_NAME, "spec")]

        targets = [Target(staging / a.path, a.kind, a.precision or "fp32") for a in artifacts
                   if a.kind in ("onnx", "tensorrt-plan")]
        result = run_checks(TorchRunner(model, input_size), targets, seed=request.seed,
                            batches=request.profile.check_batches(), tolerances=tolerances)
        require_some_backend(result)
        manifest = _manifest(request, spec, model, artifacts, tolerances, result, builder, provenance)
        installed = True  # from here on the folder is the new export (or, after a crash, an incomplete one)
        _install(staging, request.out, [a.path for a in artifacts], manifest)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        raise UserError(f"--out {request.out}: writing the export failed ({exc.strerror})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not installed:
            remove_empty(created)
    result.raise_if_failed()
    return ExportResult(request.out, manifest, result)


@dataclass(frozen=True)
class _Provenance:
    """What the ONNX metadata and the manifest both record, computed once per export."""

    spec_hash: str
    versions: dict[str, str]  # library_versions(), which includes xception-build's own

    @property
    def tool_version(self) -> str:
        return self.versions["xception-build"]


def _tolerances(request: ExportRequest) -> dict[str, Tolerance]:
    """Defaults per precision; --atol/--rtol override the precision that was asked for."""
    tolerances = dict(DEFAULT_TOLERANCES)
    tolerances[request.precision] = tolerance_for(request.precision, request.atol, request.rtol)
    return tolerances


def _staging_dir(out: Path) -> tuple[Path, list[Path]]:
    try:
        return staging_dir(out, ".xbuild-export-")
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})",
                        hint="choose a folder you can write to") from exc


def _build_plan(request: ExportRequest, staging: Path, input_size: tuple[int, ...]) -> dict[str, Any]:
    from exporters.tensorrt_backend import BuildSettings, build_engine, major_version

    source = ONNX_FP16_NAME if request.precision == "fp16" and major_version() >= 11 else ONNX_NAME
    cache = staging / TIMING_CACHE_NAME
    if (request.out / TIMING_CACHE_NAME).is_file():
        shutil.copyfile(request.out / TIMING_CACHE_NAME, cache)  # reuse the last build's timings
    settings = BuildSettings(request.profile, input_size, request.precision, request.workspace_bytes)
    return build_engine(staging / source, staging / PLAN_NAME, settings, timing_cache=cache)


def _onnx_metadata(model: Any, spec: Any, provenance: _Provenance) -> dict[str, str]:
    cfg = model.pretrained_cfg
    versions = provenance.versions
    return {
        "xbuild.spec_name": str(spec.name), "xbuild.spec_hash": provenance.spec_hash,
        "xbuild.version": versions["xception-build"], "xbuild.torch_version": versions.get("torch", ""),
        "xbuild.onnx_version": versions.get("onnx", ""),
        "xbuild.onnxscript_version": versions.get("onnxscript", ""),
        "xbuild.input_size": ",".join(str(d) for d in cfg["input_size"]),
        "xbuild.mean": ",".join(f"{v:g}" for v in cfg["mean"]),
        "xbuild.std": ",".join(f"{v:g}" for v in cfg["std"]),
        "xbuild.interpolation": str(cfg.get("interpolation", "")),
        "xbuild.crop_pct": f"{cfg.get('crop_pct', 1.0):g}",
        "xbuild.num_classes": str(cfg["num_classes"]), "xbuild.precision": "fp32",
    }


def _manifest(request: ExportRequest, spec: Any, model: Any, artifacts: Sequence[Artifact],
              tolerances: dict[str, Tolerance], result: VerificationResult,
              builder: dict[str, Any] | None, provenance: _Provenance) -> Manifest:
    from xception_build.spec import resolved_data

    cfg = model.pretrained_cfg
    batch: Any = request.profile.opt if request.static_batch else "N"
    return Manifest(
        format_version=FORMAT_VERSION,
        tool={"name": "xception-build", "version": provenance.tool_version},
        versions=dict(provenance.versions),
        spec=SpecInfo(hash=provenance.spec_hash, source=str(request.spec), overrides=list(request.overrides),
                      resolved=resolved_data(spec)),
        model=ModelInfo(
            input={"name": INPUT_NAME, "shape": [batch, *cfg["input_size"]], "dtype": "float32"},
            output={"name": OUTPUT_NAME, "shape": [batch, cfg["num_classes"]], "dtype": "float32"},
            input_size=list(cfg["input_size"]), mean=list(cfg["mean"]), std=list(cfg["std"]),
            interpolation=cfg.get("interpolation"), crop_pct=cfg.get("crop_pct"),
            num_classes=cfg["num_classes"], params=sum(p.numel() for p in model.parameters())),
        export={"exporter": "torch.onnx dynamo", "opset": request.opset,
                "batch_profile": str(request.profile), "static_batch": request.static_batch,
                "precision": request.precision,
                "batchnorm_folded": True, "weights_source": str(request.weights) if request.weights else None,
                "init_seed": request.seed, "tensorrt": builder},
        artifacts=list(artifacts),
        verification=VerificationInfo(
            reference="pytorch, cpu, eval mode, TF32 off", seed=request.seed,
            batches=list(request.profile.check_batches()), tolerances=dict(tolerances),
            passed=result.passed, results=[c.to_dict() for c in result.comparisons],
            not_run=[vars(s) for s in result.skipped]),
    )


def _install(staging: Path, out: Path, names: Sequence[str], manifest: Manifest) -> None:
    """Move the staged files into ``out``: old manifest out first, new manifest in last."""
    try:
        old = {a.path for a in read_manifest(out).artifacts}
    except UserError:
        old = set()
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for name in [*names, *([TIMING_CACHE_NAME] if (staging / TIMING_CACHE_NAME).exists() else [])]:
        os.replace(staging / name, out / name)
    for stale in old - set(names):  # files of the previous export that this one does not have
        # only plain names of files in `out`: never "", ".", "..", a path elsewhere, or a folder
        if Path(stale).name != stale or stale in ("", ".", "..", MANIFEST_NAME):
            continue
        path = out / stale
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
    write_manifest(out, manifest)
