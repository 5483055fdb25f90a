"""ONNX export: every shipped spec exports and verifies; the graph is folded, named, self-contained
and reproducible."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import Result
from onnx import TensorProto, helper

from exporters.contract import BatchProfile
from exporters.onnx.export import export_onnx, serialize, to_fp16, unfolded_batchnorms
from exporters.onnx.runtime import onnxruntime_unavailable
from xception_build import build_model, load_spec
from xception_build.errors import UserError
from xception_build.spec import spec_hash

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
# Small enough to keep the suite fast, still every block kind of every spec; xception_cifar is small already.
SHRINK = ["--set", "input.size=64", "--set", "middle.repeat=1"]


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_exports_and_verifies(spec: Path, tmp_path: Path,
                                                 run: Callable[..., Result]) -> None:
    shrink = [] if spec.stem == "xception_cifar" else SHRINK
    result = run("export", spec, *shrink, "--batch", "1:2:3", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "verification passed" in result.output
    assert {"model.onnx", "manifest.json", "spec.resolved.yaml", "weights.safetensors"} <= {
        p.name for p in tmp_path.iterdir()}
    verified = run("verify", tmp_path)
    assert verified.exit_code == 0, verified.output
    assert "onnxruntime-cpu" in verified.output


@pytest.mark.slow
def test_full_size_xception_exports_and_verifies(tmp_path: Path, run: Callable[..., Result]) -> None:
    """The README's command at 299x299 (with a narrow profile so that verification stays quick)."""
    result = run("export", ROOT / "specs" / "xception.yaml", "--onnx", "--batch", "1:2:2", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"]["input_size"] == [3, 299, 299]
    assert manifest["model"]["params"] == 22_855_952
    assert run("verify", tmp_path).exit_code == 0


def test_graph_is_named_folded_and_annotated(cifar_export: Path) -> None:
    proto = onnx.load(cifar_export / "model.onnx")
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["xbuild.spec_hash"] == spec_hash(load_spec(ROOT / "specs" / "xception_cifar.yaml"))
    assert meta["xbuild.input_size"] == "3,32,32"
    assert meta["xbuild.mean"] == "0.4914,0.4822,0.4465"
    assert meta["xbuild.batch_profile"] == "1:2:4"
    assert {"xbuild.version", "xbuild.torch_version", "xbuild.onnx_version", "xbuild.std"} <= set(meta)
    assert proto.producer_name == "xception-build"
    assert proto.opset_import[0].version == 18
    assert not any(n.metadata_props or n.doc_string for n in proto.graph.node)  # no stack traces with paths
    onnx.checker.check_model(proto, full_check=True)


def test_onnx_is_self_contained(cifar_export: Path) -> None:
    proto = onnx.load(cifar_export / "model.onnx", load_external_data=False)
    assert all(t.data_location == TensorProto.DEFAULT for t in proto.graph.initializer)
    assert not list(cifar_export.glob("*.data"))


def test_reexport_is_byte_identical(cifar_export: Path, cifar_weights: Path, tmp_path: Path,
                                    run: Callable[..., Result]) -> None:
    result = run("export", ROOT / "specs" / "xception_cifar.yaml", "--weights", cifar_weights,
                 "--batch", "1:2:4", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.onnx").read_bytes() == (cifar_export / "model.onnx").read_bytes()
    first = json.loads((cifar_export / "manifest.json").read_text())["artifacts"]
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"] == first


def test_static_batch(tmp_path: Path, run: Callable[..., Result]) -> None:
    result = run("export", ROOT / "specs" / "xception_cifar.yaml", "--static-batch", "--batch", "2",
                 "--out", tmp_path)
    assert result.exit_code == 0, result.output
    proto = onnx.load(tmp_path / "model.onnx")
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_one_size_profile_keeps_a_dynamic_graph_held_to_that_size(tmp_path: Path,
                                                                  run: Callable[..., Result]) -> None:
    from exporters.onnx.runtime import OnnxRuntimeRunner

    result = run("export", ROOT / "specs" / "xception_cifar.yaml", "--batch", "1", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    with OnnxRuntimeRunner(tmp_path / "model.onnx") as runner:
        assert runner.inputs[0].shape[0] is None and str(runner.profile) == "1:1:1"
        with pytest.raises(UserError, match="batch 2 is outside the batch profile 1:1:1"):
            runner.infer({"input": np.zeros((2, 3, 32, 32), dtype=np.float32)})


def test_static_batch_refuses_a_range() -> None:
    model = build_model(ROOT / "specs" / "xception_cifar.yaml")
    with pytest.raises(UserError, match="--static-batch needs one batch size"):
        export_onnx(model, (3, 32, 32), profile=BatchProfile(1, 2, 4), static_batch=True)


def test_unsupported_opset_is_a_user_error() -> None:
    model = build_model(ROOT / "specs" / "xception_cifar.yaml")
    with pytest.raises(UserError, match="--opset 11"):
        export_onnx(model, (3, 32, 32), profile=BatchProfile(1, 2, 4), opset=11)


def test_batchnorm_check_catches_an_unfolded_conv_bn() -> None:
    """The guard export relies on must see a Conv -> BatchNormalization pair."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn"),
             helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["z"], name="bn_on_input")]
    graph = helper.make_graph(nodes, "g", [], [])
    assert unfolded_batchnorms(helper.make_model(graph)) == ["bn"]


def test_fp16_copy_keeps_fp32_interface_and_verifies(tmp_path: Path, run: Callable[..., Result]) -> None:
    result = run("export", ROOT / "specs" / "xception_cifar.yaml", "--precision", "fp16", "--batch", "1:2:2",
                 "--out", tmp_path)
    assert result.exit_code == 0, result.output
    proto = onnx.load(tmp_path / "model.fp16.onnx")
    assert {t.data_type for t in proto.graph.initializer if t.data_type in (1, 10)} == {TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    rows = json.loads((tmp_path / "manifest.json").read_text())["verification"]["results"]
    assert {r["artifact"] for r in rows if r["precision"] == "fp16"} == {"model.fp16.onnx"}
    assert all(r["passed"] for r in rows)
    fp16 = next(r for r in rows if r["precision"] == "fp16")
    # fp16's own rule: its elementwise bound, and agreement on the samples the reference is confident on
    assert fp16["tolerance"]["max_error"] == 2e-2 and fp16["tolerance"]["min_top1"] == 1.0
    assert fp16["outputs"][0]["agreement"]["outcome"] == "within"
    if onnxruntime_unavailable("cuda") is not None:  # the CPU provider checks the graph, not GPU numerics
        assert "model.fp16.onnx was run by ONNX Runtime's CPU provider only: that verifies the fp16 graph, " \
               "not GPU fp16 numerics" in result.output


def test_fp16_conversion_is_deterministic_and_close_to_fp32(cifar_export: Path, tmp_path: Path) -> None:
    from exporters.onnx.export import load_onnx
    from exporters.onnx.runtime import OnnxRuntimeRunner

    half = to_fp16(load_onnx(cifar_export / "model.onnx"))
    assert serialize(to_fp16(load_onnx(cifar_export / "model.onnx"))) == serialize(half)
    (tmp_path / "fp16.onnx").write_bytes(serialize(half))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with OnnxRuntimeRunner(cifar_export / "model.onnx") as runner:
        full = runner.infer({"input": x})["logits"]
    with OnnxRuntimeRunner(tmp_path / "fp16.onnx") as runner:
        reduced = runner.infer({"input": x})["logits"]
    assert 0 < np.abs(full - reduced).max() < 1e-2 * np.abs(full).max()
