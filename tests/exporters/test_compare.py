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


def test_small_noise_passes_and_large_noise_fails_with_the_tolerance_that_would_pass() -> None:
    ref = _logits()
    assert _compare(ref, ref + 1e-6).passed
    cand = ref.copy()
    cand[1, 3] += 0.05
    report = _compare(ref, cand)
    out = report.outputs[0]
    assert not report.passed
    assert out.max_abs == pytest.approx(0.05, rel=1e-3)
    ref64 = ref.astype(np.float64)
    expected_atol = float(np.max(np.abs(cand - ref64) - FP32.rtol * np.abs(ref64)))
    assert out.atol_needed == pytest.approx(expected_atol)
    assert "would pass with atol >=" in out.failures[0]
    # and with that tolerance it does pass
    looser = tolerance_for("fp32", atol=out.atol_needed * 1.0001)
    assert _compare(ref, cand, looser).outputs[0].atol_needed <= looser.atol
    assert not [f for f in _compare(ref, cand, looser).outputs[0].failures if "atol" in f]


def test_top1_flip_fails_fp32_but_fp16_only_needs_top5() -> None:
    ref = np.array([[1.0, 0.999, 0.0, -1.0, -2.0, -3.0]], dtype=np.float32)
    cand = np.array([[0.999, 1.0, 0.0, -1.0, -2.0, -3.0]], dtype=np.float32)
    fp32 = _compare(ref, cand, tolerance_for("fp32", atol=0.01))
    assert fp32.outputs[0].top1 == 0.0 and fp32.outputs[0].top5 == 1.0
    assert any("top-1 agreement" in f for f in fp32.outputs[0].failures)
    assert _compare(ref, cand, FP16, "fp16").passed


def test_top5_miss_fails_fp16() -> None:
    ref = np.array([[5.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    cand = ref.copy()
    cand[0, 0] = 0.0  # the reference's top class drops out of the candidate's top 5
    report = _compare(ref, cand, tolerance_for("fp16", atol=10.0), "fp16")
    assert report.outputs[0].top5 == 0.0
    assert "top-5 agreement 0.0% < 100.0%" in report.outputs[0].failures


def test_cosine_catches_a_relative_error_that_atol_misses() -> None:
    ref = _logits() * 1e-4  # logits of a freshly initialised network are tiny
    report = _compare(ref, -ref)
    assert any("cosine" in f for f in report.outputs[0].failures)


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
    tol = tolerance_for("fp16", atol=0.5)
    assert tol.atol == 0.5 and tol.rtol == FP16.rtol and tol.min_top5 == FP16.min_top5
    with pytest.raises(UserError, match="--rtol -1"):
        tolerance_for("fp32", rtol=-1)
    with pytest.raises(UserError, match="choose one of fp32, fp16"):
        tolerance_for("int8")


def test_table_marks_failures() -> None:
    ref = _logits()
    table = format_table([_compare(ref, ref), _compare(ref, ref + 1.0)])
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["artifact", "backend", "batch", "output"]
    assert lines[1].endswith("ok") and lines[2].endswith("FAIL")
