"""``--explain``'s diagnosis: block by block, where an artifact leaves the PyTorch reference."""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from exporters.contract import META_BLOCKS, BatchProfile
from exporters.onnx.blocks import read_blocks
from exporters.onnx.export import export_onnx, serialize, set_metadata, to_fp16
from exporters.verify.compare import DEFAULT_TOLERANCES
from exporters.verify.explain import BlockRow, Explanation, explain
from exporters.verify.reference import reference_model
from xception_build import load_spec
from xception_build.errors import UserError
from xception_build.model import XceptionNet

CIFAR = Path(__file__).resolve().parents[2] / "specs" / "xception_cifar.yaml"

MIDDLE_LINE = next(i for i, text in enumerate(CIFAR.read_text().splitlines(), 1)
                   if "{out: 256, reps: 3, shortcut: identity}" in text)  # where middle.blocks[0] is written


@pytest.fixture(scope="module")
def model(cifar_weights: Path) -> XceptionNet:
    return reference_model(load_spec(CIFAR), cifar_weights, 0)


@pytest.fixture(scope="module")
def exported(model: XceptionNet) -> onnx.ModelProto:
    return export_onnx(model, (3, 32, 32), profile=BatchProfile(1, 2, 4))


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)


def _write(proto: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(serialize(proto))
    return path


def _drifted(proto: onnx.ModelProto, module: str, factor: float) -> onnx.ModelProto:
    """A copy of ``proto`` with the largest weight tensor of one block's nodes times ``factor``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    block = next(b for b in read_blocks(out) if b.module == module)
    names = {i for n in out.graph.node if n.name in block.nodes for i in n.input}
    tensor = max((t for t in out.graph.initializer if t.name in names and len(t.dims) == 4),
                 key=lambda t: int(np.prod(t.dims)))
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), tensor.name))
    return out


def test_an_untouched_export_passes_in_every_block(model: XceptionNet, exported: onnx.ModelProto,
                                                   inputs: np.ndarray, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(exported, tmp_path / "artifact")
    scratch = tmp_path / "temp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = explain(model, path, "fp32", inputs, tolerance=DEFAULT_TOLERANCES["fp32"])
    assert list(scratch.iterdir()) == []  # the diagnostic copy is gone again
    assert [r.module for r in result.rows] == [b.module_name for b in model.plan.blocks] + ["head"]
    assert all(r.passed and r.finite for r in result.rows), result.table()
    assert result.first_divergence is None and result.unmapped == []
    assert result.findings() == ["no block leaves the fp32 tolerance"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no diagnostic copy left beside it
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["first_divergence"] is None and len(data["blocks"]) == len(result.rows)
    assert data["blocks"][4]["module"] == "middle.blocks.0" and data["blocks"][4]["repeat"] == [1, 4]
    lines = result.table().splitlines()
    assert len(lines) == 1 + len(result.rows) and all(line.endswith("ok") for line in lines[1:])


def test_one_percent_drift_in_one_block_is_named_where_it_starts(model: XceptionNet, exported: onnx.ModelProto,
                                                                 inputs: np.ndarray, tmp_path: Path) -> None:
    path = _write(_drifted(exported, "middle.blocks.1", 1.01), tmp_path)
    result = explain(model, path, "fp32", inputs, tolerance=DEFAULT_TOLERANCES["fp32"])
    first = result.first_divergence
    assert first is not None, result.table()
    assert (first.module, first.spec_path, first.repeat) == ("middle.blocks.1", "middle.blocks[0]", (2, 4))
    assert (Path(first.file or "").resolve(), first.line) == (CIFAR.resolve(), MIDDLE_LINE)
    index = result.rows.index(first)
    assert index == 5 and all(r.passed for r in result.rows[:index])
    assert first.error > 1e-4 == DEFAULT_TOLERANCES["fp32"].max_error
    assert not result.rows[-1].passed  # the logits fail too: this is what a failed verification explains
    assert result.findings()[0] == (f"first divergence: middle.blocks.1 = middle.blocks[0] (repeat 2/4), "
                                    f"{first.file} line {MIDDLE_LINE}, cosine {first.cosine:.6g}, "
                                    f"error {first.error:.3g}")
    assert result.to_dict()["first_divergence"] == "middle.blocks.1"


def test_fp16_overflow_is_named_at_the_block_that_leaves_the_range(model: XceptionNet, inputs: np.ndarray,
                                                                    tmp_path: Path) -> None:
    grown = copy.deepcopy(model)
    with torch.no_grad():  # each of the residual branch's three norms scales by 100: the branch by 1e6
        for sep in ("sep1", "sep2", "sep3"):
            norm = grown.get_submodule(f"middle.blocks.2.main.{sep}.pw_norm")
            assert isinstance(norm, torch.nn.BatchNorm2d)
            norm.weight.mul_(100)
            norm.bias.mul_(100)
    peaks: dict[str, float] = {}
    hooks = [grown.get_submodule(b.module_name).register_forward_hook(
        lambda _m, _a, out, name=b.module_name: peaks.__setitem__(name, float(out.abs().max())))
        for b in grown.plan.blocks]
    with torch.inference_mode():
        grown(torch.from_numpy(inputs))
    for hook in hooks:
        hook.remove()
    assert peaks["middle.blocks.1"] < 1e3 < 65504 < peaks["middle.blocks.2"]  # the premise: only from here on

    fp16 = to_fp16(export_onnx(grown, (3, 32, 32), profile=BatchProfile(1, 2, 4)))
    assert all(np.isfinite(numpy_helper.to_array(t)).all() for t in fp16.graph.initializer)  # weights fit fp16
    path = _write(fp16, tmp_path, "model.fp16.onnx")
    result = explain(grown, path, "fp16", inputs, tolerance=DEFAULT_TOLERANCES["fp16"])
    overflow = result.first_overflow
    assert overflow is not None, result.table()
    assert (overflow.module, overflow.spec_path, overflow.repeat) == ("middle.blocks.2", "middle.blocks[0]", (3, 4))
    index = result.rows.index(overflow)
    assert not any(r.overflow for r in result.rows[:index]) and all(r.passed for r in result.rows[:index])
    assert any(line.startswith("first fp16 overflow: middle.blocks.2 = middle.blocks[0] (repeat 3/4)")
               for line in result.findings())
    assert result.to_dict()["first_overflow"] == "middle.blocks.2"


def test_an_untouched_fp16_export_has_no_overflow(model: XceptionNet, exported: onnx.ModelProto,
                                                  inputs: np.ndarray, tmp_path: Path) -> None:
    path = _write(to_fp16(exported), tmp_path, "model.fp16.onnx")
    result = explain(model, path, "fp16", inputs, tolerance=DEFAULT_TOLERANCES["fp16"])
    assert result.first_overflow is None and result.first_divergence is None, result.table()


def test_a_file_without_the_block_map_is_a_clean_user_error(model: XceptionNet, exported: onnx.ModelProto,
                                                           inputs: np.ndarray, tmp_path: Path) -> None:
    foreign = onnx.ModelProto()
    foreign.CopyFrom(exported)
    kept = [(p.key, p.value) for p in foreign.metadata_props if p.key != META_BLOCKS]
    del foreign.metadata_props[:]
    set_metadata(foreign, dict(kept))
    path = _write(foreign, tmp_path)
    with pytest.raises(UserError) as error:
        explain(model, path, "fp32", inputs, tolerance=DEFAULT_TOLERANCES["fp32"])
    assert "xbuild.blocks" in str(error.value) and "only ONNX files exported by xbuild" in str(error.value)


def test_a_map_naming_tensors_the_file_lacks_is_a_clean_user_error(model: XceptionNet, exported: onnx.ModelProto,
                                                                   inputs: np.ndarray, tmp_path: Path) -> None:
    edited = onnx.ModelProto()
    edited.CopyFrom(exported)
    entries = json.loads(next(p.value for p in edited.metadata_props if p.key == META_BLOCKS))
    entries[3]["output"] = "no_such_tensor"
    set_metadata(edited, {META_BLOCKS: json.dumps(entries)})
    path = _write(edited, tmp_path)
    with pytest.raises(UserError) as error:
        explain(model, path, "fp32", inputs, tolerance=DEFAULT_TOLERANCES["fp32"])
    assert "'no_such_tensor'" in str(error.value) and entries[3]["module"] in str(error.value)


def test_int8_sensitivity_ranks_blocks_by_how_much_each_multiplies_the_loss() -> None:
    """On a curve flat but for three steps, the steps rank first, by the factor each grows 1 - cosine by;
    a block that doubles a loss already there ranks below one that starts it."""
    cosines = [1.0, 0.999, 0.999, 0.95, 0.95, 0.9, 0.9]
    rows = [BlockRow(f"b{i}", f"entry.blocks[{i}]", (1, 1), None, None, 0.0, c, 1.0, 1.0, True, False, c >= 0.99)
            for i, c in enumerate(cosines)]
    result = Explanation("model.int8.onnx", "int8", DEFAULT_TOLERANCES["int8"], 4, rows)
    ranked = result.sensitivity(top=3)
    assert [r.module for r, _ in ranked] == ["b1", "b3", "b5"]
    floor = 1e-9  # the first block is exact: the floor is LOSS_FLOOR
    expected = [math.log((0.001 + floor) / floor), math.log((0.05 + floor) / (0.001 + floor)),
                math.log((0.1 + floor) / (0.05 + floor))]
    assert [added for _, added in ranked] == pytest.approx(expected, rel=1e-6)
    assert [line.split(":")[0] for line in result.findings()] == [
        "first divergence", "int8 loss #1", "int8 loss #2", "int8 loss #3", "int8 loss #4", "int8 loss #5"]
    assert "1 - cosine 0.001 -> 0.05" in result.findings()[2]


def test_an_int8_export_with_one_quantized_block_is_explained_from_that_block_on(
        model: XceptionNet, exported: onnx.ModelProto, inputs: np.ndarray, tmp_path: Path) -> None:
    """Every block but middle.blocks.2 kept in float: the blocks before it stay at float precision,
    the curve rises there, and the ranking's steps add up to the loss at the logits."""
    from exporters.onnx.quantize import quantize_int8

    calibration = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32)
    floats = [b.module_name for b in model.plan.blocks if b.module_name != "middle.blocks.2"]
    path = _write(quantize_int8(exported, calibration, exclude=floats), tmp_path, "model.int8.onnx")
    result = explain(model, path, "int8", inputs, tolerance=DEFAULT_TOLERANCES["int8"])
    modules = [r.module for r in result.rows]
    quantized = modules.index("middle.blocks.2")
    assert all(r.error < 1e-5 for r in result.rows[:quantized - 1]), result.table()  # untouched float blocks
    assert 1 - result.rows[quantized].cosine > 100 * (1 - result.rows[quantized - 2].cosine)
    ranked = result.sensitivity(top=len(result.rows))
    assert sorted(r.module for r, _ in ranked) == sorted(modules)
    assert [a for _, a in ranked] == sorted((a for _, a in ranked), reverse=True)
    losses = [max(1 - r.cosine, 0.0) for r in result.rows]
    floor = max(losses[0], 1e-9)
    assert sum(a for _, a in ranked) == pytest.approx(math.log((losses[-1] + floor) / floor), abs=1e-6)
    # the one quantized block, and the one before it whose output is quantized as its input, start the loss
    assert {r.module for r, _ in ranked[:2]} == {"middle.blocks.1", "middle.blocks.2"}
    lines = result.findings(top=3)  # no per-block tolerance for int8: never "no block leaves the tolerance"
    assert [line.split(":")[0] for line in lines] == ["int8 loss #1", "int8 loss #2", "int8 loss #3"]
    ranks = [line.split()[-1] for line in result.table().splitlines()[1:]]
    assert ranks[modules.index(ranked[0][0].module)] == "#1" and ranks.count("-") == len(modules) - 5
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert [entry["module"] for entry in data["sensitivity"]] == [r.module for r, _ in ranked[:5]]
