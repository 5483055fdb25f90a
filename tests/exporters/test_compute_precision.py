"""A backend that computes an artifact at another precision than the artifact's is judged by that
precision's rule: an fp32 file run at bf16 (as OpenVINO does on AMX CPUs) by the bf16 rule, never
the fp32 one.

No backend here computes at bf16, so the backend is a test double defined below: it runs the
PyTorch model wholly in bfloat16 (weights and activations: real bf16 numerics) and reports the
precision it computed at as a runner's ``_load`` does (``Runner.compute_precision``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.backends import ArtifactBackend
from exporters.contract import (
    DEFAULT_RUN_SETTINGS,
    INPUT_NAME,
    OUTPUT_NAME,
    BatchProfile,
    ComputePrecision,
    RunSettings,
    TensorSpec,
)
from exporters.runner import Runner, TorchRunner
from exporters.verify.checks import Target, VerificationResult, run_checks
from exporters.verify.compare import DEFAULT_TOLERANCES
from exporters.verify.junit import junit_xml
from exporters.verify.reference import reference_model
from xception_build import load_spec
from xception_build.errors import UserError
from xception_build.model import XceptionNet

CIFAR = Path(__file__).resolve().parents[2] / "specs" / "xception_cifar.yaml"


class Bfloat16Runner(Runner):
    """Runs ``model`` in bfloat16 and says it computed at ``reports`` (None: the artifact's precision)."""

    def __init__(self, model: torch.nn.Module, reports: ComputePrecision | None) -> None:
        super().__init__("onnxruntime-cpu", "bf16 double")
        self.model, self.reports = model, reports
        self._bf16: torch.nn.Module | None = None

    def _load(self) -> tuple[tuple[TensorSpec, ...], BatchProfile | None]:
        self._bf16 = copy.deepcopy(self.model).eval().to(torch.bfloat16)
        self.compute_precision = self.reports
        return (TensorSpec(INPUT_NAME, "float32", (None, 3, 32, 32)),), None

    def _release(self) -> None:
        self._bf16 = None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._bf16 is not None
        with torch.inference_mode():
            out = self._bf16(torch.from_numpy(feeds[INPUT_NAME]).to(torch.bfloat16))
        return {OUTPUT_NAME: out.float().numpy()}


@dataclass(frozen=True)
class DoubleBackend(ArtifactBackend):
    make: Callable[[], Runner] = lambda: Bfloat16Runner(torch.nn.Identity(), None)

    def unavailable(self) -> str | None:
        return None

    def runner(self, path: Path, settings: RunSettings = DEFAULT_RUN_SETTINGS) -> Runner:
        return self.make()


@pytest.fixture(scope="module")
def model(cifar_weights: Path) -> XceptionNet:
    return reference_model(load_spec(CIFAR), cifar_weights, 0)


def _check(model: XceptionNet, candidate: torch.nn.Module, reports: ComputePrecision | None, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch, tolerances: Mapping[ComputePrecision, object] = DEFAULT_TOLERANCES
           ) -> VerificationResult:
    backend = DoubleBackend("onnxruntime-cpu", "onnx", "cpu", "bf16 test double",
                            make=lambda: Bfloat16Runner(candidate, reports))
    monkeypatch.setattr("exporters.verify.checks.artifact_backends", lambda kind: [backend])
    target = Target(tmp_path / "model.onnx", "onnx", "fp32")  # an fp32 artifact; the double runs the model
    return run_checks(TorchRunner(model, (3, 32, 32)), [target], batches=(4,), seed=0,
                      tolerances=tolerances)  # type: ignore[arg-type]


def test_an_fp32_artifact_computed_at_bf16_is_judged_by_the_bf16_rule(model: XceptionNet, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    as_bf16 = _check(model, model, "bf16", tmp_path, monkeypatch)
    assert as_bf16.passed, as_bf16.report()
    assert {c.compute_precision for c in as_bf16.comparisons} == {"bf16"}
    assert all(c.tolerance == DEFAULT_TOLERANCES["bf16"] for c in as_bf16.comparisons)
    assert max(c.outputs[0].error for c in as_bf16.comparisons) > DEFAULT_TOLERANCES["fp32"].max_error  # type: ignore[operator]
    row = as_bf16.report().splitlines()[1].split()
    assert row[:2] == ["model.onnx", "onnxruntime-cpu"] and row[5] == "bf16"
    assert as_bf16.to_dict()["comparisons"][0]["compute_precision"] == "bf16"  # type: ignore[index]
    assert b"precision bf16" in junit_xml(as_bf16)
    # the same bf16 numbers, reported as the artifact's own precision: the fp32 rule fails them
    as_fp32 = _check(model, model, None, tmp_path, monkeypatch)
    assert as_fp32.failed and {c.compute_precision for c in as_fp32.comparisons} == {"fp32"}
    assert any("exceeds max_error 0.0001" in why for c in as_fp32.comparisons for why in c.outputs[0].failures)


def test_the_bf16_rule_still_fails_a_corrupted_block(model: XceptionNet, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    broken = copy.deepcopy(model)
    conv = next(m for m in broken.get_submodule("middle.blocks.1").modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(2)  # one convolution of one block doubled
    result = _check(model, broken, "bf16", tmp_path, monkeypatch)
    assert result.failed and {c.compute_precision for c in result.comparisons} == {"bf16"}, result.report()
    assert any("exceeds max_error 0.1" in why for c in result.comparisons for why in c.outputs[0].failures)


def test_a_compute_precision_without_a_tolerance_is_a_clean_error(model: XceptionNet, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    only_fp32 = {"fp32": DEFAULT_TOLERANCES["fp32"]}
    with pytest.raises(UserError, match="onnxruntime-cpu computes it at bf16, and no bf16 tolerance is given"):
        _check(model, model, "bf16", tmp_path, monkeypatch, only_fp32)
