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
from typing import TYPE_CHECKING, Literal

import numpy as np

from exporters.backends import artifact_backends
from exporters.calibration import HeldOut
from exporters.contract import (
    DEFAULT_RUN_SETTINGS,
    INPUT_NAME,
    OUTPUT_NAME,
    BackendName,
    ComputePrecision,
    ModelArtifactKind,
    Precision,
    RunSettings,
)
from exporters.runner import Runner, TorchRunner
from exporters.verify.compare import Comparison, Tolerance, compare, format_table
from exporters.verify.integrity import ArtifactCheck
from exporters.verify.seeded import seeded_input
from xception_build.errors import BackendUnavailable, NotJudged, UserError, VerificationFailed

if TYPE_CHECKING:
    from exporters.verify.explain import Explanation


@dataclass(frozen=True)
class Target:
    """One artifact to check numerically; ``name`` is what reports call it (its manifest path)."""

    path: Path
    kind: ModelArtifactKind
    precision: Precision  # picks the tolerance, unless the backend computes at another (Runner.compute_precision)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.path.name)


@dataclass(frozen=True)
class Skipped:
    """A numeric check that could not run here: this backend, this batch, and why."""

    artifact: str
    backend: str
    batch: int
    reason: str


@dataclass(frozen=True)
class LeftOut:
    """An artifact the options left out of the selection (``--backend``), and why."""

    artifact: str
    reason: str


#: passed (exit 0), failed (1), not verified: a selected artifact no backend here compared (3),
#: not judged: it ran, but an int8 artifact's accuracy was judged on nothing real (synthetic images, 4)
Verdict = Literal["passed", "failed", "not verified", "not judged"]


@dataclass
class VerificationResult:
    """Everything a verification found; the CLI prints it and the JUnit writer reports it.

    The verdict fails closed: ``passed`` only when nothing failed, every selected artifact was
    compared numerically by at least one backend here, and every comparison was judged.
    """

    artifact_checks: list[ArtifactCheck] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)  # artifacts that must be checked numerically
    comparisons: list[Comparison] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # files that look like artifacts, not in the manifest
    notes: list[str] = field(default_factory=list)  # extra findings, e.g. which weights differ
    no_reference: str | None = None  # why the PyTorch reference could not be rebuilt, if it could not
    explanations: list[Explanation] = field(default_factory=list)  # block by block (--explain, or a failure)

    @property
    def failed(self) -> bool:
        return not all(c.passed for c in self.artifact_checks) or any(c.failed for c in self.comparisons)

    @property
    def unchecked(self) -> list[str]:
        """Selected artifacts no backend compared here."""
        compared = {c.artifact for c in self.comparisons}
        return [name for name in self.selected if name not in compared]

    @property
    def not_judged(self) -> list[Comparison]:
        """Comparisons that ran but whose agreement and accuracy were not judged (synthetic images)."""
        return [c for c in self.comparisons if c.verdict == "not judged"]

    @property
    def verdict(self) -> Verdict:
        if self.failed:
            return "failed"
        if self.unchecked or not self.selected:
            return "not verified"
        if self.not_judged:
            return "not judged"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def report(self) -> str:
        """The full verification table, integrity checks first, then what was not checked and why."""
        lines = [f"integrity  {c.path}: {'ok' if c.passed else 'FAIL: ' + str(c.problem)}"
                 for c in self.artifact_checks]
        if self.comparisons:
            lines += ["", format_table(self.comparisons), ""]
            for c in self.comparisons:  # what each verdict on held-out images rests on, with its bounds
                lines += [f"judged     {c.artifact} on {c.backend}, {o.name}: {statistic.describe()}"
                          for o in c.outputs if c.sampled for statistic in o.statistics
                          if statistic.outcome != "exceeds"]
            lines += [f"FAIL       {c.artifact} on {c.backend}, batch {c.batch}, {o.name}: {why}"
                      for c in self.comparisons for o in c.outputs for why in o.failures]
            lines += [f"not judged {c.artifact} on {c.backend}: {c.not_judged}" for c in self.not_judged]
        not_run: dict[tuple[str, str, str], list[int]] = {}
        for s in self.skipped:
            not_run.setdefault((s.artifact, s.backend, s.reason), []).append(s.batch)
        lines += [f"not run    {artifact} on {backend} (batch {', '.join(map(str, batches))}): {reason}"
                  for (artifact, backend, reason), batches in not_run.items()]
        lines += [f"left out   {o.artifact}: {o.reason}" for o in self.left_out]
        lines += [f"unlisted   {name}: looks like an artifact but the manifest does not list it; not checked"
                  for name in self.unlisted]
        lines += [f"note       {note}" for note in self.notes]
        for explanation in self.explanations:
            lines += ["", f"explain    {explanation.artifact} ({explanation.precision}, batch {explanation.batch}):"]
            lines += [f"  {finding}" for finding in explanation.findings()]
            lines += ["", explanation.table()]
        broken = {c.path for c in self.artifact_checks if not c.passed}
        lines += [f"unchecked  {name}: " + ("its integrity check failed, so no numeric check ran" if name in broken
                                           else f"no numeric check ran: {self.no_reference}" if self.no_reference
                                           else "no backend here compared it with PyTorch")
                  for name in self.unchecked]
        return "\n".join(lines).strip("\n")

    def to_dict(self) -> dict[str, object]:
        """Everything :meth:`report` shows, as plain data (``xbuild verify --json``)."""
        return {"verdict": self.verdict, "passed": self.passed,
                "integrity": [{"path": c.path, "passed": c.passed, "problem": c.problem} for c in self.artifact_checks],
                "selected": list(self.selected), "unchecked": self.unchecked,
                "comparisons": [c.to_dict() for c in self.comparisons],
                "not_run": [vars(s) for s in self.skipped], "left_out": [vars(o) for o in self.left_out],
                "unlisted": list(self.unlisted), "notes": list(self.notes), "no_reference": self.no_reference,
                "explanations": [e.to_dict() for e in self.explanations]}

    def raise_for_verdict(self) -> None:
        """Exit 1 when a check failed, 3 when a selected artifact was not checked here, 4 when one was
        not judged (synthetic images); return when passed."""
        if self.failed:
            raise ChecksFailed(self)
        if self.verdict == "not judged":
            raise ChecksNotJudged(self)
        if self.verdict != "passed":
            raise NotVerified(self)


class ChecksFailed(VerificationFailed):
    """``VerificationFailed`` (exit 1) that carries the whole result, so a caller can print the table."""

    def __init__(self, result: VerificationResult) -> None:
        self.result = result
        failed = sum(not c.passed for c in result.artifact_checks) + sum(c.failed for c in result.comparisons)
        checks = len(result.artifact_checks) + len(result.comparisons)
        super().__init__(f"verification failed: {failed} of {checks} checks failed (the report names them)")


class NotVerified(BackendUnavailable):
    """Nothing failed, but a selected artifact was compared by no backend here: exit 3, never "passed"."""

    def __init__(self, result: VerificationResult) -> None:
        self.result = result
        reasons = sorted({f"{s.backend}: {s.reason}" for s in result.skipped if s.artifact in result.unchecked})
        names = ", ".join(result.unchecked) or "nothing"
        super().__init__(f"not verified: {names} checked by no backend here"
                         + (f" ({'; '.join(reasons)})" if reasons else ""),
                         hint="run it where its backend (and its data) is, or leave it out explicitly with "
                              "--backend, e.g. --backend onnxruntime-cpu")


class ChecksNotJudged(NotJudged):
    """Nothing failed and everything ran, but an int8 artifact was judged on synthetic images only:
    exit 4, neither "passed" nor "failed"."""

    def __init__(self, result: VerificationResult) -> None:
        self.result = result
        names = ", ".join(dict.fromkeys(c.artifact for c in result.not_judged))
        super().__init__(f"not judged: {names} ran on synthetic images only, so its accuracy was not judged",
                         hint="give --calib DATA (export) or --data DATA (verify) with real images; or "
                              "--judge-synthetic to judge its agreement on the synthetic ones")


#: images per call when an artifact is judged on held-out images (clamped to the artifact's batch profile)
DATA_BATCH = 32


def run_checks(reference: TorchRunner, targets: Sequence[Target], *, batches: Sequence[int], seed: int,
               tolerances: Mapping[ComputePrecision, Tolerance], result: VerificationResult | None = None,
               backends: Sequence[BackendName] | None = None, held_out: HeldOut | None = None,
               no_held_out: str = "", judge_synthetic: bool = False,
               settings: RunSettings = DEFAULT_RUN_SETTINGS) -> VerificationResult:
    """Compare every target on every available backend with the reference.

    fp32 and fp16 artifacts are judged on seeded inputs at every batch size; int8 artifacts on the
    ``held_out`` images, as a whole (accuracy drop and agreement, with bounds). Without them an
    int8 artifact is not checked, for the reason ``no_held_out`` gives; on synthetic held-out
    images it is not judged, unless ``judge_synthetic`` (then by agreement). Each comparison is
    judged by the tolerance of the precision the backend computed at (``Runner.compute_precision``,
    known once the runner is loaded), by default the artifact's.
    """
    result = result if result is not None else VerificationResult()
    result.selected += [t.name for t in targets if t.name not in result.selected]
    probe = _Probe(reference, seed, held_out)
    with reference:
        for target in targets:
            on_data = target.precision == "int8"
            planned = [DATA_BATCH] if on_data else list(batches)
            for backend in artifact_backends(target.kind):
                if backends is not None and backend.name not in backends:
                    continue
                reason = backend.unavailable()
                if reason is None and on_data and held_out is None:
                    reason = no_held_out or "int8 artifacts are judged on held-out images, and none were given"
                if reason is not None:
                    result.skipped += [Skipped(target.name, backend.name, b, reason) for b in planned]
                    continue
                try:
                    with backend.runner(target.path, settings) as runner:
                        computed = runner.compute_precision or target.precision
                        if computed not in tolerances:
                            raise UserError(f"{target.name}: {backend.name} computes it at {computed}, and no "
                                            f"{computed} tolerance is given (have {', '.join(tolerances)})")
                        tolerance = tolerances[computed]
                        if on_data:
                            assert held_out is not None
                            result.comparisons.append(probe.on_data(runner, target, tolerance, judge_synthetic))
                        else:
                            result.comparisons += [probe.seeded(runner, target, tolerance, b) for b in batches]
                except BackendUnavailable as exc:  # e.g. a plan built for another GPU or TensorRT version
                    done = {c.batch for c in result.comparisons if c.artifact == target.name
                            and c.backend == backend.name}
                    result.skipped += [Skipped(target.name, backend.name, b, exc.message)
                                       for b in planned if b not in done]
            if target.precision == "fp16" and \
                    {c.backend for c in result.comparisons if c.artifact == target.name} == {"onnxruntime-cpu"}:
                result.notes.append(f"{target.name} was run by ONNX Runtime's CPU provider only: that verifies the "
                                    "fp16 graph, not GPU fp16 numerics (verify it where onnxruntime-cuda or "
                                    "tensorrt runs)")
    return result


class _Probe:
    """The inputs every target is fed and the reference's answers to them, each computed once."""

    def __init__(self, reference: TorchRunner, seed: int, held_out: HeldOut | None) -> None:
        self.reference, self.seed, self.held_out = reference, seed, held_out
        self._seeded: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self._data_reference: np.ndarray | None = None

    def seeded(self, runner: Runner, target: Target, tolerance: Tolerance, batch: int) -> Comparison:
        if batch not in self._seeded:
            x = seeded_input(self.seed, batch, self.reference.input_size)
            self._seeded[batch] = x, self.reference.infer({INPUT_NAME: x})
        x, expected = self._seeded[batch]
        return compare(expected, _run_renamed(runner, x), tolerance, artifact=target.name, backend=runner.backend,
                       batch=batch, precision=target.precision, compute_precision=runner.compute_precision)

    def on_data(self, runner: Runner, target: Target, tolerance: Tolerance, judge_synthetic: bool) -> Comparison:
        held_out = self.held_out
        assert held_out is not None
        size = DATA_BATCH if runner.profile is None else min(max(DATA_BATCH, runner.profile.min), runner.profile.max)
        if self._data_reference is None:
            self._data_reference = np.concatenate(
                [self.reference.infer({INPUT_NAME: b})[OUTPUT_NAME] for b in held_out.batches(size)])
        got = _batched(runner, held_out, size)
        count = len(held_out.images)
        not_judged = None
        if held_out.synthetic and not judge_synthetic:
            not_judged = (f"agreement and accuracy not judged on {count} synthetic images (class templates plus "
                          "noise, no labels of the model's task): a model behaves differently on them than on its "
                          "data, so their figures say little about the quantization (--judge-synthetic judges "
                          "agreement on them all the same)")
        return compare({OUTPUT_NAME: self._data_reference}, {OUTPUT_NAME: got}, tolerance, artifact=target.name,
                       backend=runner.backend, batch=size, precision=target.precision, labels=held_out.labels,
                       inputs=f"{count} {'synthetic' if held_out.synthetic else 'held-out'}",
                       compute_precision=runner.compute_precision, sampled=True, not_judged=not_judged)


def _batched(runner: Runner, held_out: HeldOut, size: int) -> np.ndarray:
    """The runner's logits for every held-out image, ``size`` at a time (the last batch padded to a
    size the artifact's profile admits, the padding dropped)."""
    outputs = []
    for batch in held_out.batches(size):
        count = len(batch)
        if runner.profile is not None and count < runner.profile.min:
            batch = np.concatenate([batch, np.repeat(batch[-1:], runner.profile.min - count, axis=0)])
        outputs.append(_run_renamed(runner, batch)[OUTPUT_NAME][:count])
    return np.concatenate(outputs)


def _run_renamed(runner: Runner, array: np.ndarray) -> dict[str, np.ndarray]:
    """Feed a single-input model whatever its input is called; name a single output ``logits``."""
    outputs = runner.infer({runner.inputs[0].name: array})
    return {OUTPUT_NAME: next(iter(outputs.values()))} if len(outputs) == 1 else outputs
