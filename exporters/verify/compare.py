"""Compare a runner's outputs with the reference's and say by how much they differ.

Comparing is separate from running (as in Polygraphy): :func:`compare` takes two dicts of arrays
and returns a :class:`Comparison` that records, per output, the raw metrics (max/mean absolute
error, max relative error), the scale-relative error the pass rule judges, cosine similarity,
top-1 agreement and top-5 containment -- and for labelled data the accuracy of both -- whether it
passed, and what bound *would* have passed, so a failure says how far off it was.

Why scale-relative: float error grows with the magnitude of what is summed. The same correct
export of a network whose logits are ~2e5 differs from PyTorch by ~0.1 in absolute terms, and
PyTorch differs from itself by as much between batch sizes; a fixed ``atol`` fails it, while it
would pass a broken export whose logits are ~1e-4. So the error of each sample is measured
against that sample's own magnitude:

    error(sample) = max |candidate - reference| / max |reference|      (over the sample's outputs)

and an output passes when, for every sample, ``error <= max_error``; the mean per-sample cosine
similarity is ``>= min_cosine``; top-1 agreement (candidate and reference pick the same class)
and top-5 containment (the reference's class is in the candidate's top 5) reach their minimums;
and, where labels exist, the candidate's accuracy is at most ``max_accuracy_drop`` below the
reference's. Scaling the model's output by any factor leaves every one of these unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from exporters.contract import PRECISIONS, Precision
from xception_build.errors import UserError
from xception_build.tables import render_table

RULE = ("per sample: max|candidate - reference| / max|reference| <= max_error; mean per-sample cosine "
        ">= min_cosine; top-1 agreement >= min_top1; top-5 containment >= min_top5; with labels: "
        "accuracy(reference) - accuracy(candidate) <= max_accuracy_drop")


@dataclass(frozen=True)
class Tolerance:
    """What counts as "the same output" for one precision (``None``: that bound is not applied)."""

    max_error: float | None = None  # scale-relative, see the module docstring
    min_cosine: float = 0.0
    min_top1: float = 0.0  # fraction of samples whose top-1 class agrees
    min_top5: float = 0.0  # fraction of samples whose reference top-1 is in the candidate's top 5
    max_accuracy_drop: float | None = None  # accuracy points (0.01 = 1 point), labelled data only

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


#: fp32: 1e-4 of each sample's scale is two orders above float32 rounding through the whole
#: network (~1e-6) and far below what one weight tensor off by 1 % does (1e-3 and up).
#: fp16: ~1e-3 relative per op accumulates; top-1 flips on near-ties, so top-5 containment is
#: required instead. int8: judged on held-out images by agreement and accuracy, not elementwise.
DEFAULT_TOLERANCES: dict[Precision, Tolerance] = {
    "fp32": Tolerance(max_error=1e-4, min_cosine=0.9999, min_top1=1.0, min_top5=1.0),
    "fp16": Tolerance(max_error=2e-2, min_cosine=0.999, min_top1=0.0, min_top5=1.0),
    "int8": Tolerance(max_error=None, min_cosine=0.99, min_top1=0.99, min_top5=0.99, max_accuracy_drop=0.01),
}
TOLERANCE_NAMES = tuple(f.name for f in fields(Tolerance))


def bound_problem(name: str, value: float) -> str | None:
    """What makes ``value`` no bound for ``name`` (``min_*`` are fractions), or None."""
    if not (np.isfinite(value) and value >= 0):
        return "must be a finite number >= 0"
    if name.startswith("min_") and value > 1:
        return "a fraction, at most 1"
    return None


def tolerance_for(precision: Precision, overrides: Mapping[str, float] | None = None) -> Tolerance:
    """The default tolerance of ``precision`` with the ``--tolerance NAME=VALUE`` overrides applied."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    changes: dict[str, float] = {}
    for name, value in (overrides or {}).items():
        if name not in TOLERANCE_NAMES:
            raise UserError(f"--tolerance {name}: unknown bound; choose from {', '.join(TOLERANCE_NAMES)}")
        if (problem := bound_problem(name, value)) is not None:
            raise UserError(f"--tolerance {name}={value}: {problem}")
        changes[name] = float(value)
    return replace(DEFAULT_TOLERANCES[precision], **changes)


@dataclass
class OutputComparison:
    """Metrics of one output tensor and why it failed, if it did."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    error: float  # the scale-relative error the rule judges (worst sample)
    cosine: float  # mean per-sample cosine similarity
    top1: float | None  # None where the output is not (batch, classes)
    top5: float | None
    accuracy_reference: float | None = None  # with labels only
    accuracy_candidate: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy_reference is None or self.accuracy_candidate is None:
            return None
        return self.accuracy_reference - self.accuracy_candidate


@dataclass
class Comparison:
    """The outcome of comparing one candidate run (artifact, backend, batch) with the reference."""

    artifact: str
    backend: str
    batch: int
    precision: Precision
    tolerance: Tolerance
    outputs: list[OutputComparison]
    inputs: str = "seeded"  # what was fed: seeded normal inputs, or held-out images ("data")

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, object]:
        return {"artifact": self.artifact, "backend": self.backend, "batch": self.batch, "inputs": self.inputs,
                "precision": self.precision, "passed": self.passed, "tolerance": self.tolerance.to_dict(),
                "outputs": [{**asdict(o), "shape": list(o.shape), "accuracy_drop": o.accuracy_drop}
                            for o in self.outputs]}


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], tolerance: Tolerance, *,
            artifact: str, backend: str, batch: int, precision: Precision, labels: np.ndarray | None = None,
            inputs: str = "seeded") -> Comparison:
    """Compare every reference output with the candidate's output of the same name."""
    outputs = []
    for name, ref in reference.items():
        if name not in candidate:
            raise UserError(f"{artifact}: has no output {name!r} (it has {sorted(candidate)})")
        outputs.append(compare_arrays(name, np.asarray(ref), np.asarray(candidate[name]), tolerance, labels))
    return Comparison(artifact, backend, batch, precision, tolerance, outputs, inputs)


def scaled_errors(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per sample (first axis): max |cand - ref| / max |ref|; 0 for two all-zero samples, inf for
    a difference against an all-zero reference."""
    diff = np.abs(cand.astype(np.float64) - ref.astype(np.float64)).reshape(len(ref), -1)
    scale = np.abs(ref.astype(np.float64)).reshape(len(ref), -1).max(axis=1, initial=0.0)
    worst = diff.max(axis=1, initial=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, worst / np.where(scale > 0, scale, 1.0), np.where(worst > 0, np.inf, 0.0))


def sample_cosines(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample's outputs (1 for two all-zero samples, 0 for one)."""
    a = ref.astype(np.float64).reshape(len(ref), -1)
    b = cand.astype(np.float64).reshape(len(cand), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    same = np.array([np.array_equal(x, y) for x, y in zip(a, b, strict=True)])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), same.astype(np.float64))


def compare_arrays(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance,
                   labels: np.ndarray | None = None) -> OutputComparison:
    if ref.shape != cand.shape:
        inf = float("inf")
        why = f"shape {tuple(cand.shape)} differs from the reference's {tuple(ref.shape)}"
        return OutputComparison(name, tuple(ref.shape), inf, inf, inf, inf, 0.0, None, None, failures=[why])
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    diff = np.abs(cand64 - ref64)
    finite = bool(np.isfinite(cand64).all())
    max_abs = float(diff.max()) if diff.size else 0.0
    with np.errstate(over="ignore"):  # a difference against an exact zero is an infinite relative error
        rel = diff / np.maximum(np.abs(ref64), np.finfo(np.float64).tiny)
    max_rel = float(rel.max()) if rel.size else 0.0
    error = float(scaled_errors(ref, cand).max(initial=0.0)) if ref.ndim and len(ref) else 0.0
    cosine = float(sample_cosines(ref, cand).mean()) if ref.ndim and len(ref) else 1.0
    top1 = top5 = acc_ref = acc_cand = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        ref_top = ref64.argmax(axis=1)
        top1 = float(np.mean(ref_top == cand64.argmax(axis=1)))
        k = min(5, ref.shape[1])
        cand_topk = np.argsort(-cand64, axis=1, kind="stable")[:, :k]
        top5 = float(np.mean((cand_topk == ref_top[:, None]).any(axis=1)))
        if labels is not None:
            acc_ref = float(np.mean(ref_top == labels))
            acc_cand = float(np.mean(cand64.argmax(axis=1) == labels))
    result = OutputComparison(name, tuple(ref.shape), max_abs, max_rel, float(diff.mean()) if diff.size else 0.0,
                              error, cosine, top1, top5, acc_ref, acc_cand)
    result.failures = _judge(result, tol, finite)
    return result


def _judge(out: OutputComparison, tol: Tolerance, finite: bool) -> list[str]:
    failures = []
    if not finite:
        failures.append("non-finite values (NaN or inf) in the output")
    if tol.max_error is not None and not out.error <= tol.max_error:
        failures.append(f"error {out.error:.3g} of the output's scale exceeds max_error {tol.max_error:g} "
                        f"(max |diff| {out.max_abs:.3g}; would pass with max_error >= {out.error:.3g})")
    if not out.cosine >= tol.min_cosine:
        failures.append(f"cosine similarity {out.cosine:.6f} < min_cosine {tol.min_cosine}")
    if out.top1 is not None and out.top1 < tol.min_top1:
        failures.append(f"top-1 agreement {out.top1:.1%} < {tol.min_top1:.1%}")
    if out.top5 is not None and out.top5 < tol.min_top5:
        failures.append(f"top-5 containment {out.top5:.1%} < {tol.min_top5:.1%}")
    drop = out.accuracy_drop
    if drop is not None and tol.max_accuracy_drop is not None and drop > tol.max_accuracy_drop:
        failures.append(f"accuracy {out.accuracy_candidate:.2%} is {100 * drop:.2f} points below the reference's "
                        f"{out.accuracy_reference:.2%} (max_accuracy_drop {100 * tol.max_accuracy_drop:g} points)")
    return failures


def format_table(comparisons: list[Comparison]) -> str:
    """A fixed-width table: one row per (artifact, backend, batch, output)."""
    header = ("artifact", "backend", "inputs", "batch", "output", "error", "max_abs", "max_rel", "cosine",
              "top1", "top5", "accuracy", "result")
    rows = [(c.artifact, c.backend, c.inputs, str(c.batch), o.name, f"{o.error:.2e}", f"{o.max_abs:.2e}",
             f"{o.max_rel:.2e}", f"{o.cosine:.7f}", _pct(o.top1), _pct(o.top5), _accuracy(o),
             "ok" if o.passed else "FAIL")
            for c in comparisons for o in c.outputs]
    return "\n".join(render_table(header, rows))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _accuracy(out: OutputComparison) -> str:
    if out.accuracy_reference is None or out.accuracy_candidate is None:
        return "-"
    return f"{out.accuracy_candidate:.1%} (ref {out.accuracy_reference:.1%})"
