"""TensorFlow 'same' padding and dilations export to ONNX and verify like the rest: the padding
is worked out from the input size at run time in PyTorch, and the exported graph (fixed height and
width, dynamic batch) must agree at odd and even sizes, where 'same' pads differently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from click.testing import Result

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("size", [65, 64])
def test_keras_padding_exports_and_verifies(size: int, tmp_path: Path, run: Callable[..., Result]) -> None:
    result = run("export", ROOT / "specs" / "xception_keras.yaml", "--set", f"input.size={size}",
                 "--set", "middle.repeat=1", "--batch", "1:2:2", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "verification passed" in result.output
    graph = onnx.load(tmp_path / "model.onnx").graph
    assert any(node.op_type == "Pad" for node in graph.node)  # the lopsided pads are in the graph
    assert run("verify", tmp_path).exit_code == 0


def test_output_stride_exports_and_verifies(tmp_path: Path, run: Callable[..., Result]) -> None:
    result = run("export", ROOT / "specs" / "xception41.yaml", "--set", "input.size=64", "--set",
                 "middle.repeat=1", "--set", "output_stride=8", "--batch", "1:2:2", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "verification passed" in result.output
