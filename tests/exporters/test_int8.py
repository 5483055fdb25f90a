"""int8: a QDQ artifact calibrated on real images, judged by agreement and accuracy on held-out ones.

The end-to-end case is the one users run: the small CIFAR spec trained for two epochs by
examples/train.py on an image folder (the session's ``trained`` fixture), exported with
--precision int8 --calib FOLDER, verified at export and again by `xbuild verify`, which reads the
same held-out images. How the verdicts are made is tested in test_int8_verdicts.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import Result
from image_folders import make_image_folder
from launch import CIFAR, ROOT

from exporters.calibration import DataSource, load_images
from exporters.onnx.quantize import channel_warnings
from exporters.openvino.ir import openvino_unavailable
from xception_build import load_spec, plan_spec

Run = Callable[..., Result]


@pytest.fixture(scope="module")
def int8_export(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, run: Run) -> Path:
    data, weights = trained
    out = tmp_path_factory.mktemp("int8-export")
    result = run("export", CIFAR, "--weights", weights, "--precision", "int8", "--calib", data, "--calib-size", "96",
                 "--eval-size", "200", "--batch", "1:8:16", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_a_trained_model_exports_to_int8_that_agrees_with_fp32(int8_export: Path) -> None:
    manifest = json.loads((int8_export / "manifest.json").read_text())
    assert {a["path"]: a["precision"] for a in manifest["artifacts"] if a["kind"] == "onnx"} == \
        {"model.onnx": "fp32", "model.int8.onnx": "int8"}
    verification = manifest["verification"]
    assert verification["data"]["evaluation_images"] == 200 and verification["data"]["fingerprint"]
    assert verification["tolerances"]["int8"] == {"max_error": None, "min_cosine": None, "min_top1": 0.99,
                                                   "min_top5": None, "max_accuracy_drop": 0.01,
                                                   "confident_margin": 0.5, "confidence": 0.95}
    int8 = next(r for r in verification["results"] if r["artifact"] == "model.int8.onnx")
    logits = int8["outputs"][0]
    assert int8["passed"] and int8["verdict"] == "passed" and int8["inputs"] == "200 held-out"
    assert verification["verdict"] == "passed" and int8["sampled"] and int8["compute_precision"] == "int8"
    assert logits["accuracy_reference"] > 0.5  # it learned the task: the accuracy check means something
    assert logits["drop"]["images"] == 200 and logits["drop"]["outcome"] in ("within", "undecided")
    assert logits["agreement"]["outcome"] in ("within", "undecided")
    proto = onnx.load(int8_export / "model.int8.onnx")
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert int8_weights  # per-channel int8 weights
    # Without --trt the file is for ONNX Runtime: uint8 activations with zero points, its fast CPU path
    assert _activation_zero_points(proto) and _metadata(proto)["xbuild.int8_activations"] == "asymmetric"
    assert json.loads((int8_export / "manifest.json").read_text())["export"]["int8"]["activations"] == "asymmetric"


def test_verify_judges_the_int8_artifact_again_on_the_same_held_out_images(
        int8_export: Path, trained: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    result = run("verify", int8_export)
    assert result.exit_code == 0, result.output
    assert "model.int8.onnx  onnxruntime-cpu  200 held-out" in result.output
    data, _ = trained
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    folder = tmp_path / "export"
    shutil.copytree(int8_export, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["verification"]["data"]["data"] = str(tmp_path / "gone")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    missing = run("verify", folder)
    assert missing.exit_code == 3, missing.output
    assert f"its held-out images are read from {tmp_path / 'gone'}, which is not here: give --data DATA" \
        in missing.output
    found = run("verify", folder, "--data", moved)
    assert found.exit_code == 0, found.output


def test_int8_needs_data_and_names_blocks_it_keeps_in_float(trained: tuple[Path, Path], tmp_path: Path,
                                                           run: Run) -> None:
    data, weights = trained
    unknown = run("export", CIFAR, "--precision", "int8", "--calib", data, "--calib-exclude", "middle.block[9]",
                  "--out", tmp_path / "x")
    assert unknown.exit_code == 2 and "--calib-exclude middle.block[9]: no block of the spec" in unknown.output
    assert not (tmp_path / "x").exists()
    no_data = run("export", CIFAR, "--precision", "int8", "--calib", tmp_path / "nowhere", "--out", tmp_path / "y")
    assert no_data.exit_code == 2 and "no such data folder" in no_data.output

    out = tmp_path / "kept"
    result = run("export", CIFAR, "--weights", weights, "--precision", "int8", "--calib", data, "--calib-size", "32",
                 "--eval-size", "64", "--calib-exclude", "middle.blocks[0]", "--batch", "1:8:16", "--out", out)
    assert result.exit_code == 0, result.output
    from exporters.onnx.blocks import read_blocks

    proto = onnx.load(out / "model.int8.onnx")
    kept = {n for b in read_blocks(proto) if b.module.startswith("middle.") for n in b.nodes}
    quantized = {n.name for n in proto.graph.node if n.op_type == "Conv"} & kept
    producers = {o: n for n in proto.graph.node for o in n.output}
    weights_of = [next(i for i in n.input[1:2]) for n in proto.graph.node if n.name in quantized]
    assert weights_of and all(producers.get(w) is None or producers[w].op_type != "DequantizeLinear"
                              for w in weights_of)  # float weights: no DequantizeLinear feeds them
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["int8"]["excluded_blocks"] == [f"middle.blocks.{i}" for i in range(4)]


def test_calibration_and_held_out_images_never_overlap_in_any_data_form(tmp_path: Path) -> None:
    from test_datasets import _write_cifar  # the CIFAR-10 batch writer of the dataset tests

    spec = load_spec(CIFAR)
    folder = make_image_folder(tmp_path / "folder", train=6, val=3)
    calibration, held_out = load_images(DataSource(str(folder), 30, 20), spec)
    assert calibration.shape == (30, 3, 32, 32) and held_out.images.shape == (20, 3, 32, 32)
    assert held_out.labels is not None and set(held_out.labels) <= set(range(10))
    flat = {c.tobytes() for c in calibration}
    assert not any(h.tobytes() in flat for h in held_out.images)
    cifar = tmp_path / "cifar"
    _write_cifar(cifar)
    calibration, held_out = load_images(DataSource(str(cifar), 8, 4), spec)
    assert len(calibration) == 8 and len(held_out.images) == 4 and held_out.labels is not None
    assert "CIFAR-10" in held_out.description
    assert load_images(DataSource(str(cifar), 8, 4), spec)[1].fingerprint == held_out.fingerprint


def test_channel_counts_int8_kernels_handle_badly_are_reported() -> None:
    warnings = channel_warnings(plan_spec(load_spec(ROOT / "specs" / "xception.yaml")))
    assert any(w.startswith("entry.blocks[2]: 728") for w in warnings)
    assert any(w.startswith("middle.blocks[0]: 728 channels, not a multiple of 32") for w in warnings)
    assert channel_warnings(plan_spec(load_spec(CIFAR))) == []


def _activation_zero_points(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in proto.graph.initializer
            if t.name.endswith("zero_point") and t.data_type == onnx.TensorProto.UINT8]


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def test_symmetric_activations_are_what_tensorrt_builds_from(trained: tuple[Path, Path], tmp_path: Path,
                                                             run: Run) -> None:
    data, weights = trained
    with_trt = run("export", CIFAR, "--precision", "int8", "--calib", data, "--int8-activations", "asymmetric",
                   "--trt", "--out", tmp_path / "trt")
    assert with_trt.exit_code == 2 and "cannot be built by TensorRT, which reads only symmetric int8" in with_trt.output
    fp32 = run("export", CIFAR, "--int8-activations", "symmetric", "--out", tmp_path / "fp32")
    assert fp32.exit_code == 2 and "go with --precision int8" in fp32.output
    # TensorRT cannot be installed here, so `--trt --precision int8` stops before exporting; the
    # request it makes is what decides which file its engine would be built from.
    from exporters.pipeline import ExportRequest

    calib = DataSource(str(data), 8, 8)
    for formats, scheme in (({"onnx", "tensorrt"}, "symmetric"), ({"tensorrt"}, "symmetric"), ({"onnx"}, "asymmetric")):
        request = ExportRequest(spec=CIFAR, out=tmp_path / "r", formats=frozenset(formats),  # type: ignore[arg-type]
                                precision="int8", calib=calib)
        assert request.activation_scheme == scheme, formats

    out = tmp_path / "sym"
    result = run("export", CIFAR, "--weights", weights, "--precision", "int8", "--calib", data, "--calib-size", "64",
                 "--eval-size", "200", "--int8-activations", "symmetric", "--batch", "1:8:16", "--out", out)
    assert result.exit_code == 0, result.output
    proto = onnx.load(out / "model.int8.onnx")
    zero_points = [t for t in proto.graph.initializer if t.name.endswith("zero_point")]
    assert zero_points and all(not np.any(onnx.numpy_helper.to_array(z)) for z in zero_points)  # zero point 0
    assert not _activation_zero_points(proto) and _metadata(proto)["xbuild.int8_activations"] == "symmetric"
    assert run("verify", out).exit_code == 0


@pytest.mark.skipif(openvino_unavailable() is not None, reason=str(openvino_unavailable()))
def test_int8_openvino_ir_is_made_from_our_qdq_file_and_judged_on_held_out_images(
        trained: tuple[Path, Path], tmp_path: Path, run: Run) -> None:
    data, weights = trained
    out = tmp_path / "ov"
    result = run("export", CIFAR, "--weights", weights, "--precision", "int8", "--calib", data, "--calib-size", "96",
                 "--eval-size", "200", "--batch", "1:8:16", "--onnx", "--openvino", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = {a["path"]: (a["kind"], a["precision"]) for a in manifest["artifacts"]}
    assert kinds["model.int8.xml"] == ("openvino-ir", "int8") and kinds["model.xml"] == ("openvino-ir", "fp32")
    assert manifest["export"]["int8"]["activations"] == "symmetric"  # auto picks symmetric for OpenVINO
    judged = {r["backend"]: r for r in manifest["verification"]["results"] if r["inputs"] == "200 held-out"}
    assert set(judged) == {"onnxruntime-cpu", "openvino-cpu"} and all(r["passed"] for r in judged.values())
    assert judged["openvino-cpu"]["artifact"] == "model.int8.xml"
    again = run("verify", out, "--backend", "openvino-cpu")
    assert again.exit_code == 0, again.output
    assert "model.int8.xml  openvino-cpu  200 held-out" in again.output


def test_the_reports_show_the_int8_statistics_of_the_held_out_images(int8_export: Path, tmp_path: Path,
                                                                    run: Run) -> None:
    """report.html (written by the export) and verify's --summary show what the int8 artifact was judged by."""
    import html
    import re

    manifest = json.loads((int8_export / "manifest.json").read_text())
    (judged,) = [r for r in manifest["verification"]["results"] if r["precision"] == "int8"]

    def expected(result: dict[str, Any]) -> dict[str, str]:
        (out,) = result["outputs"]
        drop, agreement = out["drop"], out["agreement"]
        return {"held-out images": "200",
                "accuracy, PyTorch reference": f"{out['accuracy_reference']:.2%}",
                "accuracy, this artifact": f"{out['accuracy_candidate']:.2%}",
                "accuracy drop (judged)": f"{100 * drop['drop']:.2f} points, 95% bounds {100 * drop['lower']:.2f}.."
                                          f"{100 * drop['upper']:.2f} ({drop['changed']} changed class: "
                                          f"{drop['worse']} to wrong, {drop['better']} to right)",
                "top-1 agreement on confident images (judged)":
                    f"{agreement['agreement']:.1%} of {agreement['confident']} confident of {agreement['samples']}, "
                    f"95% bounds {agreement['lower']:.1%}..{agreement['upper']:.1%}",
                "top-1 agreement, every image (evidence)": f"{out['top1']:.1%}",
                "top-5 containment of the reference's class": f"{out['top5']:.1%}",
                "cosine similarity (mean per image)": f"{out['cosine']:.6f}"}

    page = (int8_export / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="int8">'):]
    section = section[:section.index("</section>")]
    assert f"model.int8.onnx on {judged['backend']}, logits: ok" in section
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", section)]
    shown = dict(zip(cells[0::3], cells[1::3], strict=True))
    assert shown == expected(judged)
    outcome = judged["outputs"][0]["drop"]["outcome"]
    assert dict(zip(cells[0::3], cells[2::3], strict=True))["accuracy drop (judged)"].startswith(
        f"<= 1 points: {outcome}")

    summary = tmp_path / "summary.md"
    verified = run("verify", int8_export, "--json", "--summary", summary)
    assert verified.exit_code == 0, verified.output
    (again,) = [c for c in json.loads(verified.stdout)["comparisons"] if c["precision"] == "int8"]
    markdown = summary.read_text(encoding="utf-8")
    assert "**int8 statistics: `model.int8.onnx` on onnxruntime-cpu, logits**" in markdown
    for name, value in expected(again).items():
        assert re.search(rf"^\| {re.escape(name)} \| {re.escape(value)} \|", markdown, re.MULTILINE), name
