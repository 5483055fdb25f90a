"""Runners: one lifecycle and one infer signature; bad feeds are clean errors for every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from exporters.contract import BatchProfile, parse_batches
from exporters.onnx.runtime import OnnxRuntimeRunner
from exporters.runner import TorchRunner
from xception_build import build_model
from xception_build.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "expected"),
                         [("1:8:16", (1, 8, 16)), ("4", (4, 4, 4)), ("2:2:2", (2, 2, 2))])
def test_batch_profile_parses(text: str, expected: tuple[int, int, int]) -> None:
    profile = BatchProfile.parse(text)
    assert (profile.min, profile.opt, profile.max) == expected
    assert str(profile) == ":".join(map(str, expected))


@pytest.mark.parametrize("text", ["1:8", "a:b:c", "", "1:8:16:32", "1.5:2:3", "1,x", ","])
def test_batch_profile_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(UserError, match="MIN:OPT:MAX"):
        BatchProfile.parse(text)


@pytest.mark.parametrize(("text", "sizes", "profile"), [
    ("1,8,64", (1, 8, 64), "1:8:64"), ("8,1", (1, 8), "1:8:8"), ("4", (4,), "4:4:4"),
    ("1:8:16", (1, 8, 16), "1:8:16"), ("2:2:4", (2, 4), "2:2:4"), (" 1, 8 ", (1, 8), "1:8:8"),
])
def test_every_command_reads_batch_the_same_way(text: str, sizes: tuple[int, ...], profile: str) -> None:
    selection = parse_batches(text)
    assert selection.sizes == sizes and str(selection.profile) == profile


def test_batch_sizes_must_be_positive() -> None:
    with pytest.raises(UserError, match="positive"):
        parse_batches("0,4")


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
def ort_runner(cifar_export: Path) -> Iterator[OnnxRuntimeRunner]:
    with OnnxRuntimeRunner(cifar_export / "model.onnx") as runner:
        yield runner


def test_dynamic_batch_runs_at_min_opt_and_max(ort_runner: OnnxRuntimeRunner) -> None:
    assert str(ort_runner.profile) == "1:2:4"  # read back from the file's metadata
    for batch in (1, 2, 3, 4):
        assert ort_runner.infer(_input(batch))["logits"].shape == (batch, 10)


@pytest.mark.parametrize("batch", [5, 17])
def test_batch_outside_the_profile_is_a_clean_error(ort_runner: OnnxRuntimeRunner, batch: int) -> None:
    with pytest.raises(UserError, match=rf"batch {batch} is outside the batch profile 1:2:4"):
        ort_runner.infer(_input(batch))


def test_batch_below_the_profile_is_a_clean_error(cifar_export: Path) -> None:
    with OnnxRuntimeRunner(cifar_export / "model.onnx", profile=BatchProfile(2, 3, 4)) as runner, \
            pytest.raises(UserError, match="batch 1 is outside the batch profile 2:3:4"):
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
    with pytest.raises(UserError, match="not an ONNX model|invalid ONNX model"), OnnxRuntimeRunner(path):
        pass


def test_a_missing_onnx_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such ONNX file"), OnnxRuntimeRunner(tmp_path / "absent.onnx"):
        pass


def test_torch_runner_is_the_model_in_eval_mode() -> None:
    import torch

    model = build_model(ROOT / "specs" / "xception_cifar.yaml").train()
    feeds = _input(2)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(feeds["input"])).numpy()
    model.train()
    with TorchRunner(model, (3, 32, 32)) as runner:
        np.testing.assert_array_equal(runner.infer(feeds)["logits"], expected)
    assert not model.training


def test_a_runner_runs_only_between_load_and_release(cifar_export: Path) -> None:
    runner = OnnxRuntimeRunner(cifar_export / "model.onnx")
    with pytest.raises(RuntimeError, match="not loaded: use it in a `with` block"):
        runner.infer(_input(1))
    with runner:
        first = runner.infer(_input(1))["logits"]
    with pytest.raises(RuntimeError, match="not loaded"):
        runner.infer(_input(1))
    with runner:  # released runners load again
        np.testing.assert_array_equal(runner.infer(_input(1))["logits"], first)
