"""Runners: one infer signature; feeds are checked once, with clean errors, for every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporters.runners import BatchProfile, OnnxRuntimeRunner, TorchRunner
from xception_build import build_model
from xception_build.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "expected"),
                         [("1:8:16", (1, 8, 16)), ("4", (4, 4, 4)), ("2:2:2", (2, 2, 2))])
def test_batch_profile_parses(text: str, expected: tuple[int, int, int]) -> None:
    profile = BatchProfile.parse(text)
    assert (profile.min, profile.opt, profile.max) == expected
    assert str(profile) == ":".join(map(str, expected))


@pytest.mark.parametrize("text", ["1:8", "a:b:c", "", "1:8:16:32", "1.5:2:3"])
def test_batch_profile_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(UserError, match="MIN:OPT:MAX"):
        BatchProfile.parse(text)


@pytest.mark.parametrize("text", ["8:4:16", "0:1:2", "1:32:16"])
def test_batch_profile_rejects_bad_order(text: str) -> None:
    with pytest.raises(UserError, match="1 <= MIN <= OPT <= MAX"):
        BatchProfile.parse(text)


def test_check_batches_are_min_opt_max() -> None:
    assert BatchProfile(1, 8, 16).check_batches() == (1, 8, 16)
    assert BatchProfile(2, 2, 4).check_batches() == (2, 4)


def _input(batch: int, dtype: str = "float32", size: int = 32) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(dtype)}


@pytest.fixture(scope="module")
def ort_runner(cifar_export: Path) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(cifar_export / "model.onnx")


def test_dynamic_batch_runs_at_min_opt_and_max(ort_runner: OnnxRuntimeRunner) -> None:
    assert str(ort_runner.profile) == "1:2:4"  # read back from the file's metadata
    for batch in (1, 2, 3, 4):
        assert ort_runner.infer(_input(batch))["logits"].shape == (batch, 10)


@pytest.mark.parametrize("batch", [5, 17])
def test_batch_outside_the_profile_is_a_clean_error(ort_runner: OnnxRuntimeRunner, batch: int) -> None:
    with pytest.raises(UserError, match=rf"batch {batch} is outside the batch profile 1:2:4"):
        ort_runner.infer(_input(batch))


def test_batch_below_the_profile_is_a_clean_error(cifar_export: Path) -> None:
    runner = OnnxRuntimeRunner(cifar_export / "model.onnx", profile=BatchProfile(2, 3, 4))
    with pytest.raises(UserError, match="batch 1 is outside the batch profile 2:3:4"):
        runner.infer(_input(1))


@pytest.mark.parametrize(("feeds", "message"), [
    (_input(2, dtype="float64"), "has dtype float64, the model takes float32"),
    (_input(2, size=64), r"has shape \(2, 3, 64, 64\), the model takes \('N', 3, 32, 32\)"),
    ({"x": _input(2)["input"]}, r"inputs \['x'\] given, the model takes \['input'\]"),
])
def test_wrong_feeds_are_clean_errors(ort_runner: OnnxRuntimeRunner, feeds: dict[str, np.ndarray],
                                      message: str) -> None:
    with pytest.raises(UserError, match=message):
        ort_runner.infer(feeds)


@pytest.mark.parametrize("content", [b"", b"hello, I am not a model\n", bytes(range(256)) * 8])
def test_a_file_that_is_not_onnx_is_a_clean_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not an ONNX model|invalid ONNX model"):
        OnnxRuntimeRunner(path)


def test_a_missing_onnx_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such ONNX file"):
        OnnxRuntimeRunner(tmp_path / "absent.onnx")


def test_torch_runner_is_the_model_in_eval_mode() -> None:
    import torch

    model = build_model(ROOT / "specs" / "xception_cifar.yaml").train()
    runner = TorchRunner(model, (3, 32, 32))
    feeds = _input(2)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(feeds["input"])).numpy()
    np.testing.assert_array_equal(runner.infer(feeds)["logits"], expected)
    assert not model.training


def test_onnxruntime_output_names_are_read_once_not_per_call(cifar_export: Path) -> None:
    runner = OnnxRuntimeRunner(cifar_export / "model.onnx")
    session, reads = runner.session, []

    class CountingSession:
        def __getattr__(self, name: str) -> object:
            return getattr(session, name)

        def get_outputs(self) -> object:
            reads.append(1)
            return session.get_outputs()

    runner.session = CountingSession()
    for batch in (1, 2):
        assert runner.infer(_input(batch))["logits"].shape == (batch, 10)
    assert reads == []  # read once, in __init__
