"""Numeric checks of artifacts against the PyTorch reference, and what they found.

The same seeded inputs, at every batch size to check, go through the PyTorch reference (TF32 off)
and through every backend of :mod:`exporters.backends` that runs each artifact's kind;
:mod:`exporters.verify.compare` judges the outputs. Backends that cannot run here are listed with
the reason, never silently dropped. ``xbuild export`` runs :func:`run_checks` on the files it is
about to install; :mod:`exporters.verify.directory` and :mod:`exporters.verify.onnx_file` on an
export folder and on a user-brought ``.onnx``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporters.backends import artifact_backends
from exporters.contract import INPUT_NAME, OUTPUT_NAME, BackendName, ModelArtifactKind, Precision
from exporters.manifest import ArtifactCheck
from exporters.runner import Runner, TorchRunner
from exporters.verify.compare import Comparison, Tolerance, compare, format_table
from xception_build.errors import BackendUnavailable, VerificationFailed


@dataclass(frozen=True)
class Target:
    """One artifact to check numerically."""

    path: Path
    kind: ModelArtifactKind
    precision: Precision  # picks the tolerance


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

    def to_dict(self) -> dict[str, object]:
        """Everything :meth:`report` shows, as plain data (``xbuild verify --json``)."""
        return {"passed": self.passed,
                "integrity": [{"path": c.path, "passed": c.passed, "problem": c.problem} for c in self.artifact_checks],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "not_run": [vars(s) for s in self.skipped], "notes": list(self.notes)}

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


def run_checks(reference: TorchRunner, targets: Sequence[Target], *, batches: Sequence[int], seed: int,
               tolerances: Mapping[Precision, Tolerance], result: VerificationResult | None = None,
               backends: Sequence[BackendName] | None = None) -> VerificationResult:
    """Compare every target on every available backend with the reference, at every batch size."""
    result = result if result is not None else VerificationResult()
    inputs: dict[int, np.ndarray] = {}  # one seeded input per batch size, shared by every target
    expected: dict[int, dict[str, np.ndarray]] = {}
    with reference:
        for target in targets:
            for backend in artifact_backends(target.kind):
                if backends is not None and backend.name not in backends:
                    continue
                reason = backend.unavailable()
                if reason is not None:
                    result.skipped.append(Skipped(target.path.name, backend.name, reason))
                    continue
                try:
                    with backend.runner(target.path) as runner:
                        for batch in batches:
                            if batch not in inputs:
                                inputs[batch] = seeded_input(seed, batch, reference.input_size)
                                expected[batch] = reference.infer({INPUT_NAME: inputs[batch]})
                            got = _run_renamed(runner, inputs[batch])
                            result.comparisons.append(compare(
                                expected[batch], got, tolerances[target.precision], artifact=target.path.name,
                                backend=runner.backend, batch=batch, precision=target.precision))
                except BackendUnavailable as exc:  # e.g. a plan built for another GPU or TensorRT version
                    result.skipped.append(Skipped(target.path.name, backend.name, exc.message))
    return result


def _run_renamed(runner: Runner, array: np.ndarray) -> dict[str, np.ndarray]:
    """Feed a single-input model whatever its input is called; name a single output ``logits``."""
    outputs = runner.infer({runner.inputs[0].name: array})
    return {OUTPUT_NAME: next(iter(outputs.values()))} if len(outputs) == 1 else outputs


def require_some_backend(result: VerificationResult) -> None:
    """Numbers were asked for but nothing here could produce them: that is exit code 3, not a pass."""
    missing = [s for s in result.skipped if s.backend != "-"]
    if not result.comparisons and missing:
        reasons = sorted({f"{s.backend}: {s.reason}" for s in missing})
        raise BackendUnavailable("no backend for a numeric check is available here; " + "; ".join(reasons))
