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


def test_top1_flip_fails_fp32_but_fp16_only_needs_top5() -> None:
    ref = np.array([[1.0, 0.999, 0.0, -1.0, -2.0, -3.0]], dtype=np.float32)
    cand = np.array([[0.999, 1.0, 0.0, -1.0, -2.0, -3.0]], dtype=np.float32)
    fp32 = _compare(ref, cand, tolerance_for("fp32", {"max_error": 0.01}))
    assert fp32.outputs[0].top1 == 0.0 and fp32.outputs[0].top5 == 1.0
    assert any("top-1 agreement" in f for f in fp32.outputs[0].failures)
    assert _compare(ref, cand, FP16, "fp16").passed


def test_top5_miss_fails_fp16() -> None:
    ref = np.array([[5.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    cand = ref.copy()
    cand[0, 0] = 0.0  # the reference's top class drops out of the candidate's top 5
    report = _compare(ref, cand, tolerance_for("fp16", {"max_error": 10.0}), "fp16")
    assert report.outputs[0].top5 == 0.0
    assert "top-5 containment 0.0% < 100.0%" in report.outputs[0].failures


def test_cosine_catches_a_sign_flip_of_tiny_logits() -> None:
    ref = _logits() * 1e-4  # logits of a freshly initialised network are tiny
    report = _compare(ref, -ref)
    assert any("cosine" in f for f in report.outputs[0].failures)


def test_accuracy_drop_is_judged_where_labels_exist() -> None:
    ref = np.eye(10, dtype=np.float32)[np.arange(100) % 10] * 5  # the reference is always right
    labels = np.arange(100) % 10
    cand = ref.copy()
    cand[:2] = np.roll(cand[:2], 1, axis=1)  # two images now wrong: 2 points lost, 98 % agreement
    int8 = DEFAULT_TOLERANCES["int8"]
    out = compare({"logits": ref}, {"logits": cand}, int8, artifact="m", backend="b", batch=32, precision="int8",
                  labels=labels).outputs[0]
    assert (out.accuracy_reference, out.accuracy_candidate) == (1.0, 0.98)
    assert any("2.00 points below the reference's 100.00%" in f for f in out.failures)
    assert any("top-1 agreement 98.0% < 99.0%" in f for f in out.failures)
    lenient = tolerance_for("int8", {"max_accuracy_drop": 0.05, "min_top1": 0.95, "min_top5": 0.95, "min_cosine": 0.95})
    assert compare({"logits": ref}, {"logits": cand}, lenient, artifact="m", backend="b", batch=32,
                   precision="int8", labels=labels).passed


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
    with pytest.raises(UserError, match="unknown bound; choose from max_error, min_cosine"):
        tolerance_for("fp32", {"atol": 1e-4})
    with pytest.raises(UserError, match="choose one of fp32, fp16, int8"):
        tolerance_for("bf16")  # type: ignore[arg-type]


def test_table_marks_failures() -> None:
    ref = _logits()
    table = format_table([_compare(ref, ref), _compare(ref, ref + 1.0)])
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["artifact", "backend", "inputs", "batch", "output"]
    assert lines[1].endswith("ok") and lines[2].endswith("FAIL")
