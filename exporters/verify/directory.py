"""``xbuild verify DIR``: re-check an export folder against its manifest, hashes first, then numbers.

The selection is every model artifact the manifest lists; ``--backend`` narrows it explicitly (a
CPU-only CI job can check the ONNX and leave a TensorRT plan out), and the report names what was
left out and why. Options that leave nothing to check are a user error (exit 2), never a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exporters.backends import BACKENDS, artifact_backends
from exporters.calibration import SYNTHETIC, DataSource, HeldOut, load_images
from exporters.contract import OPENVINO_PRECISIONS, BackendName, OpenVINOPrecision, RunSettings, model_kind
from exporters.manifest import MANIFEST_NAME, DataInfo, Manifest, read_manifest
from exporters.runner import TorchRunner
from exporters.verify.checks import LeftOut, Target, VerificationResult, run_checks
from exporters.verify.diagnosis import explain_targets
from exporters.verify.integrity import ArtifactCheck, check_folder, companion_files, unlisted_files
from exporters.verify.reference import reference_model
from xception_build.errors import UserError
from xception_build.spec import Spec, load_spec, spec_hash


def verify_directory(directory: str | Path, *, backends: Sequence[BackendName] | None = None,
                     data: str | None = None, explain: bool = False,
                     judge_synthetic: bool = False,
                     openvino_precision: OpenVINOPrecision | None = None) -> VerificationResult:
    """Re-check an export: the manifest's rules and every hash, then the numbers of every selected
    artifact on every backend this machine has. Read the verdict with ``raise_for_verdict``.

    int8 artifacts are judged again, by the manifest's tolerances, on the held-out images the
    manifest records (read from ``data`` instead when given: the same images elsewhere); synthetic
    ones are judged for agreement when the export asked for it, or ``judge_synthetic`` does.
    OpenVINO IR runs at the inference precision the export verified it at, unless
    ``openvino_precision`` says otherwise."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    checks = check_folder(directory, manifest)
    intact = {c.path for c in checks if c.passed}
    result = VerificationResult(artifact_checks=checks, unlisted=unlisted_files(directory, manifest))
    targets = _select(directory, manifest, backends, result)
    result.selected += [t.name for t in targets]  # those that fail their hash count as failed, not skipped
    spec_file, weights_file = manifest.artifact("spec"), manifest.artifact("weights")
    if spec_file is None or weights_file is None or not {spec_file.path, weights_file.path} <= intact:
        result.no_reference = "the spec or the weights are not what the manifest records"
        return result
    settings = manifest.verification
    if judge_synthetic and (settings.data is None or settings.data.data != SYNTHETIC):
        raise UserError(f"--judge-synthetic: {directory} has no int8 artifact judged on synthetic images; real "
                        "held-out images are always judged")
    for target in targets:
        if target.precision not in settings.tolerances:
            raise UserError(f"{directory / MANIFEST_NAME}: malformed manifest at verification.tolerances: "
                            f"no {target.precision} tolerance for {target.name}")
    spec = load_spec(directory / spec_file.path)
    found_hash = spec_hash(spec)
    if found_hash != manifest.spec.hash:
        result.artifact_checks.append(ArtifactCheck(
            spec_file.path, f"resolves to spec hash {found_hash[:12]}..., the manifest records "
            f"{manifest.spec.hash[:12]}... (the manifest is not this export's)"))
        result.no_reference = "the spec is not the one the manifest records"
        return result
    model = reference_model(spec, directory / weights_file.path, settings.seed)
    input_size = model.plan.input_shape.as_tuple()
    if tuple(manifest.model.input_size) != input_size:
        raise UserError(f"{directory / MANIFEST_NAME}: malformed manifest at model.input_size: "
                        f"{list(manifest.model.input_size)}, but the model of {spec_file.path} takes "
                        f"{list(input_size)}")
    intact_targets = []
    for target in targets:
        broken = [name for name in companion_files(manifest, target.name) if name not in intact]
        if broken:
            result.notes.append(f"{target.name}: not run: {', '.join(broken)}, which it reads, failed its check")
        elif target.name in intact:
            intact_targets.append(target)
    held_out, why = None, ""
    if any(t.precision == "int8" for t in intact_targets):
        held_out, why = _held_out(settings.data, data, spec, result)
    run = RunSettings(openvino_precision=openvino_precision or _recorded_openvino_precision(manifest))
    run_checks(TorchRunner(model, input_size), intact_targets, batches=settings.batches, seed=settings.seed,
               tolerances=settings.tolerances, result=result, backends=backends, held_out=held_out, no_held_out=why,
               judge_synthetic=judge_synthetic or settings.judge_synthetic, settings=run)
    explain_targets(result, intact_targets, model, batches=settings.batches, seed=settings.seed,
                    tolerances=settings.tolerances, held_out=held_out, spec=spec, always=explain)
    return result


def _recorded_openvino_precision(manifest: Manifest) -> OpenVINOPrecision:
    """The ``--openvino-precision`` the export verified its IR at (``auto`` where it records none)."""
    recorded = manifest.export.get("openvino")
    value = recorded.get("precision") if isinstance(recorded, dict) else None
    return value if value in OPENVINO_PRECISIONS else "auto"


def _held_out(recorded: DataInfo | None, override: str | None, spec: Spec,
              result: VerificationResult) -> tuple[HeldOut | None, str]:
    """The held-out images the int8 artifacts were judged on at export, or why they cannot be had."""
    if recorded is None:
        return None, "the manifest records no held-out images for it"
    folder = override or recorded.data
    try:
        source = DataSource(folder, recorded.calibration_images, recorded.evaluation_images, recorded.seed)
    except UserError:
        return None, f"its held-out images are read from {folder}, which is not here: give --data DATA"
    held_out = load_images(source, spec)[1]
    if recorded.fingerprint and held_out.fingerprint != recorded.fingerprint:
        result.notes.append(f"the held-out images read from {folder} differ from those the export was judged on "
                            "(another folder, or other image-library versions): judged on these")
    return held_out, ""


def _select(directory: Path, manifest: Manifest, backends: Sequence[BackendName] | None,
            result: VerificationResult) -> list[Target]:
    """Every model artifact, or those a ``--backend`` runs; the rest are left out, with the reason."""
    targets: list[Target] = []
    for art in manifest.artifacts:
        kind = model_kind(art.kind)
        if kind is None:
            continue
        runs = [b.name for b in artifact_backends(kind)]
        if backends is not None and not set(runs) & set(backends):
            result.left_out.append(LeftOut(art.path, f"--backend {', '.join(backends)} runs no {kind} artifact "
                                                     f"(those run on {', '.join(runs)})"))
            continue
        targets.append(Target(directory / art.path, kind, art.precision or "fp32", name=art.path))
    if not targets and backends is not None and result.left_out:
        kinds = sorted({BACKENDS[b].runs for b in backends})
        raise UserError(f"--backend {', '.join(backends)} selects nothing to verify in {directory}: "
                        f"it runs {', '.join(kinds)}, the export has "
                        f"{', '.join(sorted({o.artifact for o in result.left_out}))}",
                        hint="choose a backend that runs one of its artifacts, or give no --backend")
    return targets
