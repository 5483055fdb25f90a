"""Compare a runner's outputs with the reference's and say by how much they differ.

Comparing is separate from running (as in Polygraphy): :func:`compare` takes two dicts of arrays
and returns a :class:`Comparison` that records, per output, max/mean absolute error, max relative
error, cosine similarity and top-1/top-5 agreement, whether it passed, and the tolerance that
*would* have passed -- so a failure says how far off it was, not only that it was.

Pass rule per output: every element satisfies ``|cand - ref| <= atol + rtol * |ref|`` (numpy's
``allclose``), cosine similarity >= ``min_cosine``, and the top-k agreements reach their minimums.
Top-5 agreement is the fraction of samples whose reference top-1 class is among the candidate's
top 5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from exporters.contract import PRECISIONS, Precision
from xception_build.errors import UserError
from xception_build.tables import render_table


@dataclass(frozen=True)
class Tolerance:
    """What counts as "the same output" for one precision."""

    atol: float
    rtol: float
    min_cosine: float
    min_top1: float  # fraction of samples whose top-1 class agrees
    min_top5: float  # fraction of samples whose reference top-1 is in the candidate's top 5

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: fp32: PyTorch's own ONNX tests (atol 1e-4, rtol 1e-3). fp16: about 1e-2 absolute is normal
#: (NVIDIA's guidance), so the elementwise check is looser and top-5 agreement is required instead
#: of top-1, which flips on near-ties.
DEFAULT_TOLERANCES: dict[Precision, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999, min_top1=1.0, min_top5=1.0),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, min_cosine=0.999, min_top1=0.0, min_top5=1.0),
}


def tolerance_for(precision: Precision, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """The default tolerance of ``precision`` with ``atol``/``rtol`` overridden where given."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    tol = DEFAULT_TOLERANCES[precision]
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise UserError(f"--{name} {value}: must be a finite number >= 0")
    return replace(tol, atol=tol.atol if atol is None else atol, rtol=tol.rtol if rtol is None else rtol)


@dataclass
class OutputComparison:
    """Metrics of one output tensor and why it failed, if it did."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    top1: float | None  # None where the output is not (batch, classes)
    top5: float | None
    atol_needed: float  # smallest atol that passes at the configured rtol
    rtol_needed: float  # smallest rtol that passes at the configured atol
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class Comparison:
    """The outcome of comparing one candidate run (artifact, backend, batch) with the reference."""

    artifact: str
    backend: str
    batch: int
    precision: Precision
    tolerance: Tolerance
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, object]:
        return {"artifact": self.artifact, "backend": self.backend, "batch": self.batch,
                "precision": self.precision, "passed": self.passed, "tolerance": self.tolerance.to_dict(),
                "outputs": [{**asdict(o), "shape": list(o.shape)} for o in self.outputs]}


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], tolerance: Tolerance, *,
            artifact: str, backend: str, batch: int, precision: Precision) -> Comparison:
    """Compare every reference output with the candidate's output of the same name."""
    outputs = []
    for name, ref in reference.items():
        if name not in candidate:
            raise UserError(f"{artifact}: has no output {name!r} (it has {sorted(candidate)})")
        outputs.append(_compare_one(name, np.asarray(ref), np.asarray(candidate[name]), tolerance))
    return Comparison(artifact, backend, batch, precision, tolerance, outputs)


def _compare_one(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> OutputComparison:
    if ref.shape != cand.shape:
        inf = float("inf")
        why = f"shape {tuple(cand.shape)} differs from the reference's {tuple(ref.shape)}"
        return OutputComparison(name, tuple(ref.shape), inf, inf, inf, 0.0, None, None, inf, inf, [why])
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    diff = np.abs(cand64 - ref64)
    mag = np.abs(ref64)
    finite = bool(np.isfinite(cand64).all())
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = diff / np.maximum(mag, np.finfo(np.float64).tiny)
    max_rel = float(rel.max()) if rel.size else 0.0
    atol_needed = float(np.max(diff - tol.rtol * mag, initial=0.0))
    over = diff > tol.atol
    rtol_needed = float(np.max(np.where(over, (diff - tol.atol) / np.maximum(mag, 1e-300), 0.0), initial=0.0))
    cosine = _cosine(ref64, cand64)
    top1 = top5 = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        ref_top = ref64.argmax(axis=1)
        top1 = float(np.mean(ref_top == cand64.argmax(axis=1)))
        k = min(5, ref.shape[1])
        cand_topk = np.argsort(-cand64, axis=1, kind="stable")[:, :k]
        top5 = float(np.mean((cand_topk == ref_top[:, None]).any(axis=1)))
    failures = []
    if not finite:
        failures.append("non-finite values (NaN or inf) in the output")
    if atol_needed > tol.atol:
        failures.append(f"max |diff| {max_abs:.3g} exceeds atol {tol.atol:g} + rtol {tol.rtol:g} * |ref| "
                        f"(would pass with atol >= {atol_needed:.3g} or rtol >= {rtol_needed:.3g})")
    if not cosine >= tol.min_cosine:
        failures.append(f"cosine similarity {cosine:.6f} < {tol.min_cosine}")
    if top1 is not None and top1 < tol.min_top1:
        failures.append(f"top-1 agreement {top1:.1%} < {tol.min_top1:.1%}")
    if top5 is not None and top5 < tol.min_top5:
        failures.append(f"top-5 agreement {top5:.1%} < {tol.min_top5:.1%}")
    mean_abs = float(diff.mean()) if diff.size else 0.0
    return OutputComparison(name, tuple(ref.shape), max_abs, max_rel, mean_abs, cosine, top1, top5,
                            atol_needed, rtol_needed, failures)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0:  # an all-zero output is similar only to another all-zero output
        return float(np.array_equal(a, b))
    return float(np.dot(a.ravel(), b.ravel()) / norms)


def format_table(comparisons: list[Comparison]) -> str:
    """A fixed-width table: one row per (artifact, backend, batch, output)."""
    header = ("artifact", "backend", "batch", "output", "max_abs", "max_rel", "mean_abs", "cosine",
              "top1", "top5", "result")
    rows = [(c.artifact, c.backend, str(c.batch), o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}",
             f"{o.mean_abs:.2e}", f"{o.cosine:.7f}", _pct(o.top1), _pct(o.top5), "ok" if o.passed else "FAIL")
            for c in comparisons for o in c.outputs]
    return "\n".join(render_table(header, rows))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
