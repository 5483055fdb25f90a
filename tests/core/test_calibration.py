"""BatchNorm calibration keeps eval-mode activations at unit scale in an untrained network."""

from __future__ import annotations

from pathlib import Path

import torch

from xception_build import build_model
from xception_build.calibration import calibrate_batchnorm, seeded_inputs


def test_calibration_normalises_eval_activations(cifar_spec: Path) -> None:
    model = build_model(cifar_spec, overrides=["head.num_classes=0"]).eval()
    inputs = seeded_inputs((3, 32, 32), batches=2, batch_size=16)
    with torch.no_grad():
        before = model(inputs[0]).std().item()
    params = {k: v.clone() for k, v in model.named_parameters()}
    assert calibrate_batchnorm(model, inputs) == 2
    with torch.no_grad():
        after = model(inputs[0]).std().item()
    assert before > 5 * after and 0.05 < after < 5, (before, after)  # uncalibrated: grown; calibrated: ~unit
    assert not model.training, "the eval mode is restored"
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters()), "parameters untouched"
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_seeded_inputs_are_reproducible() -> None:
    a, b = seeded_inputs((3, 8, 8), seed=4), seeded_inputs((3, 8, 8), seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], seeded_inputs((3, 8, 8), seed=5)[0])
