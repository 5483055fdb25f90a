"""Numeric verification of artifacts against the PyTorch model, and re-verification of an export.

The same seeded inputs, at every batch size to check (the profile's min, opt and max), go through
the PyTorch reference (TF32 off) and through every backend this machine has for each artifact;
:mod:`exporters.compare` judges the outputs. Backends that cannot run here are listed with the
reason, never silently dropped. ``xbuild export`` uses :func:`run_checks` on the files it is about to
install; ``xbuild verify`` uses :func:`verify_directory` (hashes first, then numbers) or
:func:`verify_onnx_file` for an ``.onnx`` the user brings with a spec and weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from exporters.compare import Comparison, Tolerance, compare, format_table
from exporters.manifest import MANIFEST_NAME, ArtifactCheck, check_artifacts, read_manifest
from exporters.runners import INPUT_NAME, OUTPUT_NAME, Runner, TorchRunner, onnxruntime_unavailable
from xception_build.errors import BackendUnavailable, UserError, VerificationFailed

#: which backends can run each kind of artifact, in the order they are tried
BACKENDS = {"onnx": ("onnxruntime-cpu", "onnxruntime-cuda"), "tensorrt-plan": ("tensorrt",)}
ALL_BACKENDS = frozenset(name for names in BACKENDS.values() for name in names)


@dataclass(frozen=True)
class Target:
    """One artifact to check numerically."""

    path: Path
    kind: str  # a key of BACKENDS
    precision: str  # fp32 | fp16: picks the tolerance


@dataclass(frozen=True)
class Skipped:
    artifact: str
    backend: str
    reason: str


@dataclass
class VerificationResult:
    """Everything a verification found; the CLI prints it and the JUnit writer reports it."""

    artifact_checks: list[ArtifactCheck] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # extra findings, e.g. which weights differ

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.artifact_checks) and all(c.passed for c in self.comparisons)

    def report(self) -> str:
        """The full verification table, integrity checks first."""
        lines = [f"integrity  {c.path}: {'ok' if c.passed else 'FAIL: ' + str(c.problem)}"
                 for c in self.artifact_checks]
        if self.comparisons:
            lines += ["", format_table(self.comparisons)]
        lines += [f"not run    {s.artifact} on {s.backend}: {s.reason}" for s in self.skipped]
        lines += [f"note       {note}" for note in self.notes]
        return "\n".join(lines).strip("\n")

    def failures(self) -> str:
        """Only what failed, and by how much."""
        lines = [f"{c.path}: {c.problem}" for c in self.artifact_checks if not c.passed]
        for comp in self.comparisons:
            for out in comp.outputs:
                lines += [f"{comp.artifact} on {comp.backend}, batch {comp.batch}, {out.name}: {why}"
                          for why in out.failures]
        return "\n".join(lines + self.notes)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ChecksFailed(self)


class ChecksFailed(VerificationFailed):
    """``VerificationFailed`` (exit 1) that carries the whole result, so a caller can print the table."""

    def __init__(self, result: VerificationResult) -> None:
        self.result = result
        checks: list[ArtifactCheck | Comparison] = [*result.artifact_checks, *result.comparisons]
        failed = sum(not c.passed for c in checks)
        super().__init__(f"verification failed ({failed} check(s)):\n{result.failures()}")


def seeded_input(seed: int, batch: int, input_size: Sequence[int]) -> np.ndarray:
    """Standard-normal float32 input, a function of (seed, batch) only: re-verification sees the same."""
    return np.random.default_rng([seed, batch]).standard_normal((batch, *input_size), dtype=np.float32)


def backend_unavailable(backend: str) -> str | None:
    if backend.startswith("onnxruntime-"):
        return onnxruntime_unavailable(backend.removeprefix("onnxruntime-"))
    from exporters.tensorrt_backend import tensorrt_unavailable

    return tensorrt_unavailable()


def make_runner(backend: str, path: Path) -> Runner:
    if backend.startswith("onnxruntime-"):
        from exporters.runners import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device=backend.removeprefix("onnxruntime-"))
    from exporters.tensorrt_backend import TensorRTRunner

    return TensorRTRunner(path)


def run_checks(reference: TorchRunner, targets: Sequence[Target], *, batches: Sequence[int], seed: int,
               tolerances: Mapping[str, Tolerance], result: VerificationResult | None = None,
               backends: Sequence[str] | None = None) -> VerificationResult:
    """Compare every target on every available backend with the reference, at every batch size."""
    result = result if result is not None else VerificationResult()
    input_size = tuple(d for d in reference.inputs[0].shape[1:] if d is not None)
    inputs: dict[int, np.ndarray] = {}  # one seeded input per batch size, shared by every target
    expected: dict[int, dict[str, np.ndarray]] = {}
    for target in targets:
        for backend in BACKENDS[target.kind]:
            if backends is not None and backend not in backends:
                continue
            reason = backend_unavailable(backend)
            if reason is not None:
                result.skipped.append(Skipped(target.path.name, backend, reason))
                continue
            runner = make_runner(backend, target.path)
            for batch in batches:
                if batch not in inputs:
                    inputs[batch] = seeded_input(seed, batch, input_size)
                    expected[batch] = reference.infer({INPUT_NAME: inputs[batch]})
                got = _run_renamed(runner, inputs[batch])
                result.comparisons.append(compare(expected[batch], got, tolerances[target.precision],
                                                  artifact=target.path.name, backend=runner.backend,
                                                  batch=batch, precision=target.precision))
    return result


def _run_renamed(runner: Runner, array: np.ndarray) -> dict[str, np.ndarray]:
    """Feed a single-input model whatever its input is called; name a single output ``logits``."""
    outputs = runner.infer({runner.inputs[0].name: array})
    return {OUTPUT_NAME: next(iter(outputs.values()))} if len(outputs) == 1 else outputs


def require_some_backend(result: VerificationResult) -> None:
    """Numbers were asked for but nothing here could produce them: that is exit code 3, not a pass."""
    missing = [s for s in result.skipped if s.backend in ALL_BACKENDS]
    if not result.comparisons and missing:
        reasons = sorted({f"{s.backend}: {s.reason}" for s in missing})
        raise BackendUnavailable("no backend for a numeric check is available here; " + "; ".join(reasons))


def verify_directory(directory: str | Path, *, backends: Sequence[str] | None = None) -> VerificationResult:
    """Re-check an export: every hash, then the numbers on every backend this machine has."""
    from exporters.reference_model import reference_model
    from xception_build import load_spec
    from xception_build.spec import spec_hash

    directory = Path(directory)
    manifest = read_manifest(directory)
    result = VerificationResult(artifact_checks=check_artifacts(directory, manifest))
    intact = {c.path for c in result.artifact_checks if c.passed}
    spec_file, weights_file = manifest.artifact("spec"), manifest.artifact("weights")
    if spec_file is None or weights_file is None or not {spec_file.path, weights_file.path} <= intact:
        result.notes.append("numeric checks not run: the spec or weights no longer match the manifest")
        return result
    settings = manifest.verification
    targets = [Target(directory / a.path, a.kind, a.precision or "fp32") for a in manifest.artifacts
               if a.kind in BACKENDS and a.path in intact]
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
    input_size = tuple(manifest.model.input_size)
    if input_size != tuple(model.pretrained_cfg["input_size"]):
        raise UserError(f"{directory / MANIFEST_NAME}: malformed manifest at model.input_size: "
                        f"{list(input_size)}, but the model of {spec_file.path} takes "
                        f"{list(model.pretrained_cfg['input_size'])}")
    result.skipped += [Skipped(a.path, "-", "failed its integrity check") for a in manifest.artifacts
                       if a.kind in BACKENDS and a.path not in intact]
    run_checks(TorchRunner(model, input_size), targets, batches=settings.batches, seed=settings.seed,
               tolerances=settings.tolerances, result=result, backends=backends)
    if targets:
        require_some_backend(result)
    return result


def verify_onnx_file(onnx_path: str | Path, spec_path: str | Path, weights: str | Path | None = None, *,
                     overrides: Sequence[str] = (), batches: Sequence[int] | None = None,
                     atol: float | None = None, rtol: float | None = None, seed: int = 0,
                     backends: Sequence[str] | None = None) -> VerificationResult:
    """Check an ``.onnx`` from anywhere against a spec and weights; on failure, name weights that differ."""
    from exporters.compare import tolerance_for
    from exporters.onnx_export import load_onnx, precision_of, read_profile
    from exporters.reference_model import reference_model
    from xception_build import load_spec

    onnx_path = Path(onnx_path)
    proto = load_onnx(onnx_path)
    model = reference_model(load_spec(spec_path, overrides), weights, seed)
    input_size = tuple(model.pretrained_cfg["input_size"])
    dims = [d.dim_value or None for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != len(input_size) + 1 or any(
            d is not None and d != s for d, s in zip(dims[1:], input_size, strict=True)):
        raise UserError(f"{onnx_path}: its input has shape {tuple(d or 'N' for d in dims)}, the spec's model "
                        f"takes (N, {', '.join(map(str, input_size))})")
    profile = read_profile({p.key: p.value for p in proto.metadata_props}, dims)
    if batches is None:
        batches = profile.check_batches() if profile is not None else (1, 2)
    precision = precision_of(proto)
    result = run_checks(TorchRunner(model, input_size), [Target(onnx_path, "onnx", precision)],
                        batches=batches, seed=seed, backends=backends,
                        tolerances={precision: tolerance_for(precision, atol, rtol)})
    require_some_backend(result)
    if not result.passed:
        result.notes += differing_weights(proto, model, input_size)
    return result


def differing_weights(proto: onnx.ModelProto, model: Any, input_size: Sequence[int],
                      limit: int = 5) -> list[str]:
    """Where an ONNX departs from the model: initializers that differ from a fresh export of it.

    Our export is deterministic and keeps parameter names, so a re-export is the exact expected
    file; comparing initializers by name points at the tensor that was changed.
    """
    from onnx import numpy_helper

    from exporters.onnx_export import export_onnx, precision_of, to_fp16
    from exporters.runners import BatchProfile

    fresh = export_onnx(model, input_size, profile=BatchProfile(1, 2, 2))
    if precision_of(proto) == "fp16":
        fresh = to_fp16(fresh)
    expected = {t.name: numpy_helper.to_array(t) for t in fresh.graph.initializer}
    found = []
    for tensor in proto.graph.initializer:
        if tensor.name in expected:
            have, want = numpy_helper.to_array(tensor), expected[tensor.name]
            if have.shape != want.shape:
                found.append((float("inf"), f"{tensor.name}: shape {have.shape}, expected {want.shape}"))
            elif not np.array_equal(have, want):
                delta = float(np.abs(have.astype(np.float64) - want.astype(np.float64)).max())
                count = int((have != want).sum())
                found.append((delta, f"{tensor.name}: {count} value(s) differ, max |diff| {delta:.3g}"))
    if not any(t.name in expected for t in proto.graph.initializer):
        return ["cannot locate the difference: the file's weight names do not match an xbuild export"]
    found.sort(key=lambda item: -item[0])
    return [f"weight differs from the spec+weights export: {text}" for _, text in found[:limit]]
