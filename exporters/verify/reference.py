"""The PyTorch model an export is made from and verified against.

With weights, it is the spec's network with those weights. Without, it is the seeded init with
BatchNorm calibrated on seeded random inputs (``xception_build.calibration``): uncalibrated,
eval-mode activations grow through every residual add and the comparison would judge numbers of
arbitrary scale. Export and ``verify --onnx`` build it here, so both see the same network.
"""

from __future__ import annotations

from pathlib import Path

from xception_build.builder import build_model
from xception_build.calibration import calibrate_batchnorm, seeded_inputs
from xception_build.model import XceptionNet
from xception_build.spec import Spec
from xception_build.weights import load_weights


def reference_model(spec: Spec, weights: str | Path | None, seed: int) -> XceptionNet:
    """An eval-mode ``XceptionNet`` for ``spec`` with ``weights``, or calibrated seeded weights."""
    model = build_model(spec, seed=seed)
    if weights is not None:
        load_weights(model, weights)
    else:
        calibrate_batchnorm(model, seeded_inputs(model.plan.input_shape.as_tuple(), seed=seed))
    return model.eval()
