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

Why agreement only where the reference is confident: a sample whose two best classes are nearly
tied changes class under any rounding, so counting it makes the verdict a coin flip. A sample is
*confident* when the reference's top-1 logit leads its runner-up by at least ``margin`` of the
sample's scale (max |reference|): on seeded inputs twice ``max_error`` (the largest lead the
elementwise bound lets a change of class overturn), for int8 ``confident_margin``.

The rule, per output:

* every value finite; where set, the worst sample's ``error <= max_error``, the mean per-sample
  cosine ``>= min_cosine``, top-5 containment ``>= min_top5``;
* top-1 agreement on the confident samples ``>= min_top1``;
* with labels, the candidate's accuracy at most ``max_accuracy_drop`` below the reference's.

On seeded inputs the figures are exact: the inputs are the test. On held-out images, a sample of
the task's images, agreement and accuracy drop are judged by their bounds
(:mod:`exporters.verify.statistics`): a check fails only when its bound shows the tolerance
broken, and says so when the set is too small to show it kept. Scaling the model's output by any
factor leaves every one of these unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

import numpy as np

from exporters.contract import COMPUTE_PRECISIONS, ComputePrecision
from exporters.verify.statistics import AccuracyDrop, ConfidentAgreement
from xception_build.errors import UserError
from xception_build.tables import render_table

RULE = ("every value finite; where set: per sample max|candidate - reference| / max|reference| <= max_error, mean "
        "per-sample cosine >= min_cosine, top-5 containment >= min_top5; top-1 agreement >= min_top1 on the samples "
        "whose reference top-1 logit leads the runner-up by >= confident_margin of max|reference| (default: "
        "2 * max_error); with labels, accuracy(reference) - accuracy(candidate) <= max_accuracy_drop. On held-out "
        "images agreement and drop are judged by their two-sided bounds at `confidence` (agreement: Clopper-Pearson; "
        "drop: Tango's paired score interval): fail when the good-side bound is past the tolerance, 'within' when the "
        "bad-side bound is inside it, otherwise pass with 'too few held-out images'. Synthetic held-out images are "
        "not judged for agreement or accuracy unless asked (judge_synthetic)")


@dataclass(frozen=True)
class Tolerance:
    """What counts as "the same output" for one compute precision (``None``: that bound is not applied)."""

    max_error: float | None = None  # scale-relative, see the module docstring
    min_cosine: float | None = None
    min_top1: float | None = None  # fraction of the confident samples whose top-1 class agrees
    min_top5: float | None = None  # fraction of samples whose reference top-1 is in the candidate's top 5
    max_accuracy_drop: float | None = None  # a fraction (0.01 = 1 point), labelled data only
    confident_margin: float | None = None  # top-1 lead, of the sample's scale; None: 2 * max_error
    confidence: float = 0.95  # of the bounds on held-out images

    @property
    def margin(self) -> float:
        """The top-1 lead (of the sample's scale) from which a sample counts as confident."""
        if self.confident_margin is not None:
            return self.confident_margin
        return 2 * self.max_error if self.max_error is not None else 0.0

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


#: fp32: 1e-4 of each sample's scale is two orders above float32 rounding through the whole
#: network (~1e-6) and far below what one weight tensor off by 1 % does (1e-3 and up).
#: bf16 (an fp32 file a backend runs at bf16, e.g. OpenVINO on AMX): an 8-bit significand rounds at
#: 2^-9, eight times fp16's; the small CIFAR spec run wholly in bf16 (weights and activations,
#: torch on the CPU, BatchNorm-calibrated random weights) is off by at most 2.9e-2 of the scale and
#: keeps cosine >= 0.99976, so 1e-1 and 0.995 leave a margin of 3x and 20x, and one block's weights
#: doubled or negated still fail.
#: fp16: ~1e-3 relative per op accumulates. No top-5 or all-sample top-1 rule on seeded inputs:
#: near-ties change class under any rounding; agreement counts where the lead is beyond max_error.
#: int8: judged on held-out images by accuracy drop and agreement on the confident images, with
#: bounds; cosine and top-5 are reported, not judged (after quantization what matters is the class).
#: A lead of half the sample's scale: on a 3-epoch model of the 8x8 digits, a correct quantization
#: changed the class of images whose lead was up to 0.42 of their scale, and of none beyond.
DEFAULT_TOLERANCES: dict[ComputePrecision, Tolerance] = {
    "fp32": Tolerance(max_error=1e-4, min_cosine=0.9999, min_top1=1.0),
    "bf16": Tolerance(max_error=1e-1, min_cosine=0.995, min_top1=1.0),
    "fp16": Tolerance(max_error=2e-2, min_cosine=0.999, min_top1=1.0),
    "int8": Tolerance(min_top1=0.99, max_accuracy_drop=0.01, confident_margin=0.5),
}
TOLERANCE_NAMES = tuple(f.name for f in fields(Tolerance))
#: ``--tolerance`` names that are not field names: the name the issue tracker and docs use for the
#: accuracy drop, in points (``accuracy-drop=1`` is 1 point), and the factor to the field's unit
_NAMED: dict[str, tuple[str, float]] = {"accuracy_drop": ("max_accuracy_drop", 0.01)}
#: what `--tolerance` lists as its names (dashes, as users write them)
TOLERANCE_SPELLINGS = tuple(n.replace("_", "-") for n in (*TOLERANCE_NAMES[:4], "accuracy_drop",
                                                           *TOLERANCE_NAMES[4:]))


def tolerance_bound(name: str, value: float, *, option: str = "--tolerance") -> tuple[str, float]:
    """(field, value in the field's unit) of ``--tolerance NAME=VALUE``: dashes or underscores, and
    ``accuracy-drop`` in points; a name or value that is no bound is a :class:`UserError`."""
    key = name.strip().replace("-", "_")
    field_name, factor = _NAMED.get(key, (key, 1.0))
    if field_name not in TOLERANCE_NAMES:
        raise UserError(f"{option} {name}: unknown bound; choose from {', '.join(TOLERANCE_SPELLINGS)}")
    if (problem := bound_problem(field_name, value * factor)) is not None:
        if factor != 1.0:  # in points
            problem = problem.replace("a fraction, at most 1", "in points, at most 100")
        raise UserError(f"{option} {name}={value:g}: {problem}")
    return field_name, float(value) * factor


def bound_problem(name: str, value: float) -> str | None:
    """What makes ``value`` no bound for field ``name`` (``min_*``, drops and confidence are fractions), or None."""
    if not (np.isfinite(value) and value >= 0):
        return "must be a finite number >= 0"
    if name == "confidence" and not 0 < value < 1:
        return "a confidence, between 0 and 1 (e.g. 0.95)"
    if (name.startswith("min_") or name == "max_accuracy_drop") and value > 1:
        return "a fraction, at most 1"
    return None


def tolerance_for(precision: ComputePrecision, overrides: Mapping[str, float] | None = None) -> Tolerance:
    """The default tolerance of ``precision`` with the ``--tolerance NAME=VALUE`` overrides applied."""
    if precision not in COMPUTE_PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(COMPUTE_PRECISIONS)}")
    changes = dict(tolerance_bound(name, value) for name, value in (overrides or {}).items())
    return replace(DEFAULT_TOLERANCES[precision], **changes)


#: what a comparison concluded: the rule held, it did not, or (synthetic images) it was not applied
ComparisonVerdict = Literal["passed", "failed", "not judged"]


@dataclass
class OutputComparison:
    """Metrics of one output tensor, the statistics it was judged by, and why it failed, if it did."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    error: float  # the scale-relative error the rule judges (worst sample)
    cosine: float  # mean per-sample cosine similarity
    top1: float | None  # over every sample; None where the output is not (batch, classes)
    top5: float | None
    accuracy_reference: float | None = None  # with labels only
    accuracy_candidate: float | None = None
    agreement: ConfidentAgreement | None = None  # where min_top1 is set and the output is (batch, classes)
    drop: AccuracyDrop | None = None  # with labels, where max_accuracy_drop is set
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def statistics(self) -> list[AccuracyDrop | ConfidentAgreement]:
        """What was judged by a statistic, the task's metric (accuracy drop) first."""
        return [s for s in (self.drop, self.agreement) if s is not None]

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy_reference is None or self.accuracy_candidate is None:
            return None
        return self.accuracy_reference - self.accuracy_candidate

    def to_dict(self) -> dict[str, object]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("agreement", "drop")}
        return {**data, "shape": list(self.shape), "accuracy_drop": self.accuracy_drop,
                "agreement": None if self.agreement is None else self.agreement.to_dict(),
                "drop": None if self.drop is None else self.drop.to_dict()}


@dataclass
class Comparison:
    """The outcome of comparing one candidate run (artifact, backend, batch) with the reference."""

    artifact: str
    backend: str
    batch: int
    precision: ComputePrecision  # the artifact's
    tolerance: Tolerance
    outputs: list[OutputComparison]
    inputs: str = "seeded"  # what was fed: seeded normal inputs, or held-out images ("359 held-out")
    compute_precision: ComputePrecision | None = None  # what the backend computed at (None: ``precision``)
    sampled: bool = False  # held-out images, a sample of the task's: agreement and drop judged by bounds
    not_judged: str | None = None  # why agreement and accuracy were not judged (synthetic images), if so

    def __post_init__(self) -> None:
        if self.compute_precision is None:
            self.compute_precision = self.precision

    @property
    def failed(self) -> bool:
        return not all(o.passed for o in self.outputs)

    @property
    def verdict(self) -> ComparisonVerdict:
        if self.failed:
            return "failed"
        return "not judged" if self.not_judged is not None else "passed"

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def to_dict(self) -> dict[str, object]:
        return {"artifact": self.artifact, "backend": self.backend, "batch": self.batch, "inputs": self.inputs,
                "precision": self.precision, "compute_precision": self.compute_precision, "sampled": self.sampled,
                "verdict": self.verdict, "passed": self.passed, "not_judged": self.not_judged,
                "tolerance": self.tolerance.to_dict(), "outputs": [o.to_dict() for o in self.outputs]}


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], tolerance: Tolerance, *,
            artifact: str, backend: str, batch: int, precision: ComputePrecision, labels: np.ndarray | None = None,
            inputs: str = "seeded", compute_precision: ComputePrecision | None = None, sampled: bool = False,
            not_judged: str | None = None) -> Comparison:
    """Compare every reference output with the candidate's output of the same name.

    ``sampled``: the inputs are held-out images, judged by bounds; ``not_judged``: why agreement and
    accuracy are not judged on them (then only non-finite outputs and wrong shapes fail)."""
    outputs = []
    for name, ref in reference.items():
        if name not in candidate:
            raise UserError(f"{artifact}: has no output {name!r} (it has {sorted(candidate)})")
        outputs.append(compare_arrays(name, np.asarray(ref), np.asarray(candidate[name]), tolerance, labels,
                                      sampled=sampled, judged=not_judged is None))
    return Comparison(artifact, backend, batch, precision, tolerance, outputs, inputs, compute_precision, sampled,
                      not_judged)


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


def top1_margins(ref: np.ndarray) -> np.ndarray:
    """Per sample of (batch, classes): the top-1 logit's lead over the runner-up, of max |logit|
    (0 for an all-zero sample)."""
    ordered = np.sort(ref.astype(np.float64), axis=1)
    scale = np.abs(ref.astype(np.float64)).max(axis=1)
    lead = ordered[:, -1] - ordered[:, -2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, lead / np.where(scale > 0, scale, 1.0), 0.0)


def compare_arrays(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance, labels: np.ndarray | None = None,
                   *, sampled: bool = False, judged: bool = True) -> OutputComparison:
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
    result = OutputComparison(name, tuple(ref.shape), max_abs, max_rel, float(diff.mean()) if diff.size else 0.0,
                              error, cosine, None, None)
    if ref.ndim == 2 and ref.shape[1] > 1 and len(ref):
        ref_top, cand_top = ref64.argmax(axis=1), cand64.argmax(axis=1)
        changed = ref_top != cand_top
        result.top1 = float(np.mean(~changed))
        k = min(5, ref.shape[1])
        cand_topk = np.argsort(-cand64, axis=1, kind="stable")[:, :k]
        result.top5 = float(np.mean((cand_topk == ref_top[:, None]).any(axis=1)))
        if labels is not None:
            result.accuracy_reference = float(np.mean(ref_top == labels))
            result.accuracy_candidate = float(np.mean(cand_top == labels))
        if judged and tol.min_top1 is not None:
            confident = top1_margins(ref) >= tol.margin
            result.agreement = ConfidentAgreement.judge(
                len(ref), int(confident.sum()), int((changed & confident).sum()), tol.margin, tol.min_top1,
                sampled=sampled, confidence=tol.confidence)
        if judged and labels is not None and tol.max_accuracy_drop is not None:
            right_ref, right_cand = ref_top == labels, cand_top == labels
            result.drop = AccuracyDrop.judge(int((right_ref & ~right_cand).sum()), int((~right_ref & right_cand).sum()),
                                             int(changed.sum()), len(ref), tol.max_accuracy_drop, tol.confidence)
    result.failures = _judge(result, tol, finite, judged)
    return result


def _judge(out: OutputComparison, tol: Tolerance, finite: bool, judged: bool) -> list[str]:
    failures = []
    if not finite:
        failures.append("non-finite values (NaN or inf) in the output")
    if not judged:
        return failures
    if tol.max_error is not None and not out.error <= tol.max_error:
        failures.append(f"error {out.error:.3g} of the output's scale exceeds max_error {tol.max_error:g} "
                        f"(max |diff| {out.max_abs:.3g}; would pass with max_error >= {out.error:.3g})")
    if tol.min_cosine is not None and not out.cosine >= tol.min_cosine:
        failures.append(f"cosine similarity {out.cosine:.6f} < min_cosine {tol.min_cosine}")
    if tol.min_top5 is not None and out.top5 is not None and out.top5 < tol.min_top5:
        failures.append(f"top-5 containment {out.top5:.1%} < {tol.min_top5:.1%}")
    failures += [statistic.describe() for statistic in out.statistics if statistic.outcome == "exceeds"]
    return failures


def format_table(comparisons: list[Comparison]) -> str:
    """A fixed-width table: one row per (artifact, backend, batch, output)."""
    header = ("artifact", "backend", "inputs", "batch", "output", "precision", "error", "max_abs", "max_rel",
              "cosine", "top1", "top5", "accuracy", "result")
    rows = [(c.artifact, c.backend, c.inputs, str(c.batch), o.name, str(c.compute_precision), f"{o.error:.2e}",
             f"{o.max_abs:.2e}", f"{o.max_rel:.2e}", f"{o.cosine:.7f}", _pct(o.top1), _pct(o.top5), _accuracy(o),
             "FAIL" if not o.passed else "not judged" if c.not_judged is not None else "ok")
            for c in comparisons for o in c.outputs]
    return "\n".join(render_table(header, rows))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _accuracy(out: OutputComparison) -> str:
    if out.accuracy_reference is None or out.accuracy_candidate is None:
        return "-"
    return f"{out.accuracy_candidate:.1%} (ref {out.accuracy_reference:.1%})"
