"""The six reference specs build *the same network* as timm: parameter count and outputs.

The fixtures hold timm 1.0.31's outputs in float64 for deterministic weights given by a formula
of each state-dict key; we import those weights through the timm-checkpoint path and compare.
A bound of 1e-4 relative error separates "same network" (~1e-6) from one misplaced BN (~1e-2)."""

from __future__ import annotations

import pytest
import torch
from reference import REFERENCE_SPECS, formula_input, reference, reference_state_dict, relative_error
from spec_files import SPECS

from xception_build import build_model
from xception_build.weights import load_state

EXPECTED_PARAMS = {
    "legacy_xception": 22_855_952, "xception41": 26_969_560, "xception65": 39_916_312,
    "xception71": 42_338_736, "xception41p": 26_907_752, "xception65p": 39_819_560,
}


@pytest.mark.parametrize("ref_name", sorted(REFERENCE_SPECS))
def test_parameter_count_matches_reference(ref_name: str) -> None:
    model = build_model(SPECS / f"{REFERENCE_SPECS[ref_name]}.yaml")
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counted == EXPECTED_PARAMS[ref_name] == reference(ref_name)["params"]
    assert model.plan.total_params == counted  # the static count agrees with the module


@pytest.mark.slow
@pytest.mark.parametrize("ref_name", sorted(REFERENCE_SPECS))
def test_outputs_match_reference(ref_name: str) -> None:
    ref = reference(ref_name)
    model = build_model(SPECS / f"{REFERENCE_SPECS[ref_name]}.yaml").eval()
    assert load_state(model, reference_state_dict(ref_name)).startswith("timm-")
    with torch.no_grad():
        features = model.forward_features(formula_input().float())
        pooled = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    assert list(features.shape) == ref["feature_shape"]
    assert relative_error(pooled, torch.tensor(ref["pooled_features"])) < 1e-4
    assert relative_error(logits, torch.tensor(ref["logits"])) < 1e-4


def test_a_structural_change_is_detected() -> None:
    """The comparison can fail: the same weights in a network with BN eps 1e-3 instead of 1e-5."""
    ref = reference("legacy_xception")
    model = build_model(SPECS / "xception.yaml", overrides=["defaults.norm.eps=1.0e-3"]).eval()
    load_state(model, reference_state_dict("legacy_xception"))
    with torch.no_grad():
        logits = model(formula_input(batch=1).float())
    assert relative_error(logits, torch.tensor(ref["logits"][:1])) > 1e-3
