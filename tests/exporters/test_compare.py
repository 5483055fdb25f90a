"""The comparator: metrics per output, pass/fail per precision, and the tolerance that would pass."""

from __future__ import annotations

import numpy as np
import pytest

from exporters.verify.compare import DEFAULT_TOLERANCES, Comparison, Tolerance, compare, format_table, tolerance_for
from xception_build.errors import UserError

FP32, FP16 = DEFAULT_TOLERANCES["fp32"], DEFAULT_TOLERANCES["fp16"]


def _logits(seed: int = 0, shape: tuple[int, int] = (4, 10)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _compare(ref: np.ndarray, cand: np.ndarray, tol: Tolerance = FP32, precision: str = "fp32") -> Comparison:
    return compare({"logits": ref}, {"logits": cand}, tol, artifact="m.onnx", backend="b", batch=len(ref),
                   precision=precision)


def test_identical_outputs_pass_with_zero_error() -> None:
    ref = _logits()
    report = _compare(ref, ref.copy())
    out = report.outputs[0]
    assert report.passed
    assert out.max_abs == out.mean_abs == out.max_rel == 0.0
    assert out.cosine == pytest.approx(1.0)
    assert out.top1 == out.top5 == 1.0


def test_small_noise_passes_and_large_noise_fails_with_the_bound_that_would_pass() -> None:
    ref = _logits()
    assert _compare(ref, ref * (1 + 1e-6)).passed
    cand = ref.copy()
    cand[1, 3] += 0.05
    report = _compare(ref, cand)
    out = report.outputs[0]
    assert not report.passed
    assert out.max_abs == pytest.approx(0.05, rel=1e-3)
    assert out.error == pytest.approx(0.05 / np.abs(ref[1]).max(), rel=1e-3)  # relative to that sample's scale
    assert f"would pass with max_error >= {out.error:.3g}" in out.failures[0]
    looser = tolerance_for("fp32", {"max_error": out.error * 1.0001, "min_top1": 0.0, "min_cosine": 0.0})
    assert _compare(ref, cand, looser).passed


@pytest.mark.parametrize("scale", [1e-3, 1e-1, 1.0, 1e2, 1e4, 2e5])
def test_the_verdict_does_not_depend_on_the_output_scale(scale: float) -> None:
    """float32 rounding of an output of any size passes; a 1 % change of one class fails, at every size."""
    ref = _logits(shape=(16, 1000)).astype(np.float64) * scale
    rounded = (ref.astype(np.float32) + np.float32(scale * 1e-6) * _logits(1, ref.shape)).astype(np.float32)
    assert _compare(ref, rounded).passed
    drifted = ref.copy()
    drifted[:, 7] += 0.01 * np.abs(ref).max(axis=1)
    assert not _compare(ref, drifted).passed


def test_a_change_of_class_at_a_near_tie_is_no_failure_but_on_a_confident_sample_it_is() -> None:
    """Agreement counts only samples whose top-1 lead is beyond what the elementwise bound lets flip."""
    ref = np.array([[1.0, 0.999, 0.0, -1.0, -2.0, -3.0]], dtype=np.float32)
    tie = np.array([[0.999, 1.0, 0.0, -1.0, -2.0, -3.0]], dtype=np.float32)
    loose = tolerance_for("fp32", {"max_error": 0.01})
    near_tie = _compare(ref, tie, loose)
    assert near_tie.outputs[0].top1 == 0.0 and near_tie.passed  # a lead of 3e-4 of the scale: a coin flip
    agreement = near_tie.outputs[0].agreement
    assert agreement is not None and (agreement.samples, agreement.confident) == (1, 0)
    assert _compare(ref, tie, FP16, "fp16").passed
    confident = np.array([[3.0, 0.0, -1.0, -1.0, -2.0, -3.0]], dtype=np.float32)
    swapped = confident[:, [1, 0, 2, 3, 4, 5]]
    for precision in ("fp32", "fp16"):
        failures = _compare(confident, swapped, DEFAULT_TOLERANCES[precision], precision).outputs[0].failures
        assert any("top-1 agreement on the 1 of 1 samples the reference is confident on" in f and "below 100.0%" in f
                   for f in failures), failures
    # with the elementwise bound loosened past the change, the confident rule follows it (2 * max_error) ...
    assert _compare(confident, swapped, tolerance_for("fp32", {"max_error": 10, "min_cosine": 0}), "fp32").passed
    # ... unless the margin is set: then the change of class alone fails
    strict = tolerance_for("fp32", {"max_error": 10, "min_cosine": 0, "confident_margin": 0.5})
    assert not _compare(confident, swapped, strict, "fp32").passed


def test_top5_containment_is_reported_and_judged_only_when_asked() -> None:
    ref = np.array([[5.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    cand = ref.copy()
    cand[0, 0] = 0.0  # the reference's top class drops out of the candidate's top 5
    loose = {"max_error": 10.0, "min_cosine": 0.0}
    report = _compare(ref, cand, tolerance_for("fp16", loose), "fp16")
    assert report.outputs[0].top5 == 0.0 and report.passed
    asked = _compare(ref, cand, tolerance_for("fp16", {**loose, "min_top5": 1.0}), "fp16")
    assert "top-5 containment 0.0% < 100.0%" in asked.outputs[0].failures


def test_cosine_catches_a_sign_flip_of_tiny_logits() -> None:
    ref = _logits() * 1e-4  # logits of a freshly initialised network are tiny
    report = _compare(ref, -ref)
    assert any("cosine" in f for f in report.outputs[0].failures)


def _held_out(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray, tol: Tolerance) -> Comparison:
    return compare({"logits": ref}, {"logits": cand}, tol, artifact="m", backend="b", batch=32, precision="int8",
                   labels=labels, sampled=True, inputs=f"{len(ref)} held-out")


def _confident_and_right(count: int, wrong: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference right on ``count`` images with a clear lead, and a candidate wrong on the first ``wrong``."""
    labels = np.arange(count) % 10
    ref = np.eye(10, dtype=np.float32)[labels] * 5
    cand = ref.copy()
    cand[:wrong] = np.roll(cand[:wrong], 1, axis=1)
    return ref, cand, labels


def test_accuracy_drop_is_judged_by_its_bounds_where_labels_exist() -> None:
    int8 = DEFAULT_TOLERANCES["int8"]
    ref, cand, labels = _confident_and_right(100, 2)  # 2 points lost on 100 images: not evidence of 1 point
    out = _held_out(ref, cand, labels, int8).outputs[0]
    assert (out.accuracy_reference, out.accuracy_candidate) == (1.0, 0.98) and out.passed
    assert out.drop is not None and (out.drop.worse, out.drop.better, out.drop.images) == (2, 0, 100)
    assert out.drop.lower < 0.01 < out.drop.upper and out.drop.outcome == "undecided"
    assert out.drop.images_needed is None  # the observed drop itself is past 1 point: no set would show it within
    assert "too few held-out images to show a drop within 1 point" in out.drop.describe()
    ref, cand, labels = _confident_and_right(100, 30)  # 30 points lost: shown, and agreement is gone too
    out = _held_out(ref, cand, labels, int8).outputs[0]
    assert out.drop is not None and out.drop.lower > 0.01 and out.drop.outcome == "exceeds"
    assert any(f.startswith("accuracy drop 30.0 points (95 % bounds") and "exceeds 1 point" in f for f in out.failures)
    assert any(f.startswith("top-1 agreement on the 100 of 100 images") for f in out.failures)
    lenient = tolerance_for("int8", {"accuracy-drop": 60, "min-top1": 0.5})
    assert _held_out(ref, cand, labels, lenient).passed


def test_the_drop_verdict_flips_where_the_tolerance_crosses_the_lower_bound() -> None:
    ref, cand, labels = _confident_and_right(200, 20)
    drop = _held_out(ref, cand, labels, DEFAULT_TOLERANCES["int8"]).outputs[0].drop
    assert drop is not None
    for points, verdict in ((100 * drop.lower * 0.999, "failed"), (100 * drop.lower * 1.001, "passed")):
        tol = tolerance_for("int8", {"accuracy-drop": points, "min_top1": 0.0})
        assert _held_out(ref, cand, labels, tol).verdict == verdict, points


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_the_int8_verdict_does_not_depend_on_the_output_scale(scale: float) -> None:
    """Which samples count as confident is a lead relative to the sample's scale: the same at any scale."""
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((300, 10)) * 3
    labels = ref.argmax(axis=1)
    cand = ref + rng.standard_normal(ref.shape) * 0.6  # changes the class of the near ties only
    tol = DEFAULT_TOLERANCES["int8"]
    base = _held_out(ref, cand, labels, tol).outputs[0]
    scaled = _held_out(ref * scale, cand * scale, labels, tol).outputs[0]
    assert base.agreement is not None and scaled.agreement is not None and scaled.drop is not None
    assert scaled.agreement == base.agreement and scaled.drop == base.drop and scaled.failures == base.failures
    assert base.top1 is not None and base.top1 < 0.9 and base.agreement.confident > 30


def test_shape_mismatch_and_nan_fail() -> None:
    ref = _logits()
    assert "shape" in _compare(ref, ref[:2]).outputs[0].failures[0]
    cand = ref.copy()
    cand[0, 0] = np.nan
    assert any("non-finite" in f for f in _compare(ref, cand).outputs[0].failures)


def test_missing_output_is_a_user_error() -> None:
    with pytest.raises(UserError, match="has no output 'logits'"):
        compare({"logits": _logits()}, {"other": _logits()}, FP32, artifact="m.onnx", backend="b", batch=4,
                precision="fp32")


def test_tolerance_overrides_and_validation() -> None:
    tol = tolerance_for("fp16", {"max_error": 0.5})
    assert tol.max_error == 0.5 and tol.min_cosine == FP16.min_cosine and tol.min_top5 == FP16.min_top5
    with pytest.raises(UserError, match="max_error=-1"):
        tolerance_for("fp32", {"max_error": -1})
    with pytest.raises(UserError, match="a fraction, at most 1"):
        tolerance_for("fp32", {"min_top1": 2})
    with pytest.raises(UserError, match="unknown bound; choose from max-error, min-cosine"):
        tolerance_for("fp32", {"atol": 1e-4})
    with pytest.raises(UserError, match="choose one of fp32, bf16, fp16, int8"):
        tolerance_for("fp64")  # type: ignore[arg-type]
    # the spelling: accuracy-drop in points; the field (max_accuracy_drop) is a fraction
    assert tolerance_for("int8", {"accuracy-drop": 2}).max_accuracy_drop == pytest.approx(0.02)
    assert tolerance_for("int8", {"max_accuracy_drop": 0.02}) == tolerance_for("int8", {"accuracy_drop": 2})
    assert tolerance_for("int8", {"min-top1": 0.9, "confidence": 0.99}).min_top1 == 0.9
    with pytest.raises(UserError, match="accuracy-drop=150: in points, at most 100"):
        tolerance_for("int8", {"accuracy-drop": 150})
    with pytest.raises(UserError, match="confidence=1: a confidence, between 0 and 1"):
        tolerance_for("int8", {"confidence": 1})


def test_table_marks_failures() -> None:
    ref = _logits()
    table = format_table([_compare(ref, ref), _compare(ref, ref + 1.0)])
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["artifact", "backend", "inputs", "batch", "output"]
    assert lines[1].endswith("ok") and lines[2].endswith("FAIL")
    assert lines[0].split()[5] == "precision" and lines[1].split()[5] == "fp32"
