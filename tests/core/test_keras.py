"""Keras as the reference: TensorFlow 'same' padding, the layout transposes, and Keras Xception
weights in both file formats, matched against Keras itself (Keras 3 on its torch backend, a
test-only dependency) at odd and even input sizes."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import pytest
import torch
from checkpoints import refused
from keras.src.legacy.saving import legacy_h5_format
from spec_files import SPECS
from torch.nn import functional as F

from xception_build import build_model
from xception_build.errors import CheckpointError
from xception_build.keras_weights import to_torch
from xception_build.layers import make_conv, make_max_pool
from xception_build.weights import load_weights

# Keras' own conversions on numpy 2 warn from inside Keras; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

SIZES = (71, 80, 99)  # odd and even: 'same' pads differently for each
KERAS_SPEC = SPECS / "xception_keras.yaml"


def _keras(x: np.ndarray[Any, Any], layer: Any) -> torch.Tensor:
    """A Keras layer's output on an NCHW array, back in NCHW."""
    out = torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(layer(np.ascontiguousarray(x.transpose(0, 2, 3, 1))))))
    return out.permute(0, 3, 1, 2) if out.ndim == 4 else out


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# -- padding and transposes --------------------------------------------------------------------

@pytest.mark.parametrize("size", [7, 8, 9, 10, 11])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_max_pool_matches_keras(size: int, stride: int) -> None:
    x = np.random.default_rng(size).standard_normal((2, 4, size, size + 1)).astype("float32")
    expected = _keras(x, keras.layers.MaxPooling2D(3, stride, padding="same"))
    _assert_close(make_max_pool(3, stride, "same")(torch.from_numpy(x)), expected)


@pytest.mark.parametrize("size", [7, 8, 9, 10])
@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(3, 2, 1), (3, 1, 2), (1, 2, 1), (4, 1, 1), (5, 3, 1)])
def test_same_convolution_matches_keras(size: int, kernel: int, stride: int, dilation: int) -> None:
    x = np.random.default_rng(size).standard_normal((2, 3, size, size + 1)).astype("float32")
    layer = keras.layers.Conv2D(5, kernel, stride, padding="same", dilation_rate=dilation, use_bias=False)
    expected = _keras(x, layer)
    conv = make_conv(3, 5, kernel, stride, "same", dilation)
    with torch.no_grad():
        conv.weight.copy_(to_torch("conv", "kernel", np.asarray(keras.ops.convert_to_numpy(layer.kernel))))
        _assert_close(conv(torch.from_numpy(x)), expected)


def test_layout_transposes_match_keras_layers() -> None:
    """Each kind of kernel, moved once by to_torch, computes what the Keras layer computes
    (a depth multiplier of 2 checks the order of the depthwise channels)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 8)).astype("float32")
    separable = keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, use_bias=False)
    expected = _keras(x, separable)
    weights = {w.path.rsplit("/", 1)[-1]: np.asarray(keras.ops.convert_to_numpy(w)) for w in separable.weights}
    with torch.no_grad():
        depthwise = to_torch("sepconv", "depthwise_kernel", weights["depthwise_kernel"])
        pointwise = to_torch("sepconv", "pointwise_kernel", weights["pointwise_kernel"])
        actual = F.conv2d(F.conv2d(torch.from_numpy(x), depthwise, groups=3), pointwise)
    _assert_close(actual, expected)
    dense = keras.layers.Dense(4)
    features = rng.standard_normal((2, 6)).astype("float32")
    expected_dense = torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(dense(features))))
    kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in dense.weights)
    actual_dense = F.linear(torch.from_numpy(features), to_torch("dense", "kernel", kernel), torch.from_numpy(bias))
    torch.testing.assert_close(actual_dense, expected_dense)


# -- Keras Xception weights --------------------------------------------------------------------

def _random_weights(model: Any, seed: int = 0) -> list[np.ndarray[Any, Any]]:
    """Random weights far from Keras' initialisation (non-trivial BN statistics included)."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape, path = tuple(weight.shape), weight.path
        value = rng.standard_normal(shape).astype("float32")
        if "moving_variance" in path:
            value = np.abs(value) + 0.5
        elif "gamma" in path:
            value = 1.0 + 0.1 * value
        elif "kernel" in path:
            value *= np.sqrt(2.0 / max(1, int(np.prod(shape[:-1]))))
        else:
            value *= 0.1
        values.append(value)
    return values


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One random Keras Xception saved in every layout, and its outputs at each size."""
    folder = tmp_path_factory.mktemp("keras")
    weights: list[np.ndarray[Any, Any]] = []
    outputs, features = {}, {}
    rng = np.random.default_rng(1)
    inputs = {size: rng.standard_normal((2, 3, size, size)).astype("float32") for size in SIZES}
    for size in SIZES:
        model = keras.applications.Xception(weights=None, input_shape=(size, size, 3), classifier_activation=None)
        if not weights:
            weights = _random_weights(model)
            model.set_weights(weights)
            model.save_weights(folder / "xception.weights.h5")  # Keras 3
            with h5py.File(folder / "xception_keras2.h5", "w") as handle:  # Keras 2: the published layout
                legacy_h5_format.save_weights_to_hdf5_group(handle, model)
            model.save(folder / "xception_model.h5")  # a whole Keras 2 model: weights under model_weights
            notop = keras.applications.Xception(weights=None, include_top=False, input_shape=(size, size, 3))
            notop.set_weights(weights[: len(notop.weights)])
            with h5py.File(folder / "xception_keras2_notop.h5", "w") as handle:
                legacy_h5_format.save_weights_to_hdf5_group(handle, notop)
        model.set_weights(weights)
        outputs[size] = _keras(inputs[size], model)
        trunk = keras.Model(model.input, model.get_layer("block14_sepconv2_act").output)
        features[size] = _keras(inputs[size], trunk)
    return {"folder": folder, "inputs": inputs, "outputs": outputs, "features": features}


@pytest.mark.parametrize("file", ["xception.weights.h5", "xception_keras2.h5", "xception_model.h5"])
def test_keras_weights_reproduce_keras(file: str, keras_files: dict[str, Any]) -> None:
    model = build_model(KERAS_SPEC).eval()
    assert load_weights(model, keras_files["folder"] / file) == "keras"
    for size in SIZES:
        x = torch.from_numpy(keras_files["inputs"][size])
        with torch.no_grad():
            features = model.forward_features(x)
            logits = model.forward_head(features)
        planned = build_model(KERAS_SPEC, overrides=[f"input.size={size}"]).plan.feature_shape
        assert tuple(features.shape[1:]) == planned.as_tuple() == tuple(keras_files["features"][size].shape[1:])
        expected = keras_files["outputs"][size]
        error = float((logits - expected).norm() / expected.norm())
        assert error < 1e-5, f"{size}px: relative error {error:.1e}"


def test_keras_weights_in_the_symmetric_spec_differ(keras_files: dict[str, Any]) -> None:
    """The same weights in specs/xception.yaml (PyTorch padding, eps 1e-5): same architecture,
    other numbers, which is why xception_keras exists. The comparison above can fail."""
    model = build_model(SPECS / "xception.yaml").eval()
    load_weights(model, keras_files["folder"] / "xception.weights.h5")
    size = 80
    with torch.no_grad():
        logits = model(torch.from_numpy(keras_files["inputs"][size]))
    expected = keras_files["outputs"][size]
    assert float((logits - expected).norm() / expected.norm()) > 1e-4  # ten times the bound above


def test_keras_weights_without_top(keras_files: dict[str, Any]) -> None:
    folder = keras_files["folder"]
    model = build_model(KERAS_SPEC, num_classes=0, global_pool="").eval()
    load_weights(model, folder / "xception_keras2_notop.h5")
    for size in SIZES:
        with torch.no_grad():
            features = model(torch.from_numpy(keras_files["inputs"][size]))
        torch.testing.assert_close(features, keras_files["features"][size], rtol=1e-4, atol=1e-4)
    assert "missing: head.fc.weight" in refused(build_model(KERAS_SPEC), folder / "xception_keras2_notop.h5")


def test_keras_weights_into_a_backbone(keras_files: dict[str, Any]) -> None:
    backbone = build_model(KERAS_SPEC, features_only=True).eval()
    load_weights(backbone, keras_files["folder"] / "xception_keras2.h5")
    with torch.no_grad():
        maps = backbone(torch.from_numpy(keras_files["inputs"][80]))
    torch.testing.assert_close(maps[-1], keras_files["features"][80], rtol=1e-4, atol=1e-4)


def test_a_keras_file_of_another_network_is_refused_whole(tmp_path: Path, keras_files: dict[str, Any]) -> None:
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    small.save_weights(tmp_path / "small.weights.h5")
    for model, path in ((build_model(KERAS_SPEC), tmp_path / "small.weights.h5"),
                        (build_model(SPECS / "xception41.yaml"), keras_files["folder"] / "xception_keras2.h5")):
        assert "does not fit the model; nothing was loaded" in refused(model, path)


def test_keras_files_that_cannot_be_read(tmp_path: Path, keras_files: dict[str, Any]) -> None:
    unnamed = tmp_path / "unnamed.weights.h5"
    unnamed.write_bytes((keras_files["folder"] / "xception.weights.h5").read_bytes())
    with h5py.File(unnamed, "a") as handle:  # as Keras before 3.6 wrote them
        for group in handle["layers"].values():
            if "vars" in group and "name" in group["vars"].attrs:
                del group["vars"].attrs["name"]
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["data"] = np.zeros(3)
    model = build_model(KERAS_SPEC)
    with pytest.raises(CheckpointError, match="before 3.6"):
        load_weights(model, unnamed)
    with pytest.raises(CheckpointError, match="not Keras weights"):
        load_weights(model, other)
