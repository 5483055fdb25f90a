"""``xbuild verify DIR``: re-check an export folder against its manifest, hashes first, then numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exporters.contract import BackendName, model_kind
from exporters.manifest import MANIFEST_NAME, check_artifacts, read_manifest
from exporters.runner import TorchRunner
from exporters.verify.checks import Skipped, Target, VerificationResult, require_some_backend, run_checks
from exporters.verify.reference import reference_model
from xception_build.errors import UserError
from xception_build.spec import load_spec, spec_hash


def verify_directory(directory: str | Path, *, backends: Sequence[BackendName] | None = None) -> VerificationResult:
    """Re-check an export: every hash, then the numbers on every backend this machine has."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    result = VerificationResult(artifact_checks=check_artifacts(directory, manifest))
    intact = {c.path for c in result.artifact_checks if c.passed}
    spec_file, weights_file = manifest.artifact("spec"), manifest.artifact("weights")
    if spec_file is None or weights_file is None or not {spec_file.path, weights_file.path} <= intact:
        result.notes.append("numeric checks not run: the spec or weights no longer match the manifest")
        return result
    settings = manifest.verification
    targets = [Target(directory / a.path, kind, a.precision or "fp32") for a in manifest.artifacts
               if (kind := model_kind(a.kind)) is not None and a.path in intact]
    for target in targets:
        if target.precision not in settings.tolerances:
            raise UserError(f"{directory / MANIFEST_NAME}: malformed manifest at verification.tolerances: "
                            f"no {target.precision} tolerance for {target.path.name}")
    spec = load_spec(directory / spec_file.path)
    found_hash = spec_hash(spec)
    if found_hash != manifest.spec.hash:
        result.notes.append(f"{spec_file.path} resolves to spec hash {found_hash[:12]}..., "
                            f"the manifest records {manifest.spec.hash[:12]}...")
    model = reference_model(spec, directory / weights_file.path, settings.seed)
    input_size = model.plan.input_shape.as_tuple()
    if tuple(manifest.model.input_size) != input_size:
        raise UserError(f"{directory / MANIFEST_NAME}: malformed manifest at model.input_size: "
                        f"{list(manifest.model.input_size)}, but the model of {spec_file.path} takes "
                        f"{list(input_size)}")
    result.skipped += [Skipped(a.path, "-", "failed its integrity check") for a in manifest.artifacts
                       if model_kind(a.kind) is not None and a.path not in intact]
    run_checks(TorchRunner(model, input_size), targets, batches=settings.batches, seed=settings.seed,
               tolerances=settings.tolerances, result=result, backends=backends)
    if targets:
        require_some_backend(result)
    return result
