"""int8 verdicts a CI can trust: a correct quantization passes and says what it rests on, a broken
one fails at every held-out size, the boundary is where the bounds say, and synthetic data is
"not judged" (exit 4) unless asked.

The model is the small CIFAR spec trained for two epochs on a generated image folder (the
session's ``trained`` fixture, 300 held-out images); broken artifacts are made here from the
export's own files: one block's int8 weight scale doubled in the QDQ file, or activations
calibrated on images 16 times too bright.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import Result
from launch import CIFAR
from onnx import numpy_helper

Run = Callable[..., Result]
Trained = tuple[Path, Path]
BROKEN_BLOCK = "entry.blocks.0"  # the block whose weight scale is doubled
SIZES = (64, 256)  # held-out images the broken artifacts are judged on


@pytest.fixture(scope="module")
def export(trained: Trained, tmp_path_factory: pytest.TempPathFactory, run: Run) -> tuple[Path, Result]:
    data, weights = trained
    out = tmp_path_factory.mktemp("int8-verdicts")
    result = run("export", CIFAR, "--weights", weights, "--precision", "int8", "--calib", data, "--calib-size", "64",
                 "--eval-size", "256", "--batch", "1:8:16", "--out", out)
    return out, result


@pytest.fixture(scope="module")
def doubled_scale(export: tuple[Path, Result], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export's int8 file with the weight scale of the first quantized conv of BROKEN_BLOCK times 2."""
    from exporters.onnx.blocks import read_blocks

    proto = onnx.load(export[0] / "model.int8.onnx")
    block = next(b for b in read_blocks(proto) if b.module == BROKEN_BLOCK)
    producers = {out: node for node in proto.graph.node for out in node.output}
    weight_of = [producers.get(n.input[1]) for n in proto.graph.node if n.name in block.nodes and n.op_type == "Conv"]
    dequantize = next(p for p in weight_of if p is not None and p.op_type == "DequantizeLinear")
    scale = next(t for t in proto.graph.initializer if t.name == dequantize.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(2), scale.name))
    path = tmp_path_factory.mktemp("broken") / "scaled.int8.onnx"
    onnx.save(proto, path)
    return path


def _verify(run: Run, path: Path, trained: Trained, size: int, *extra: str) -> Result:
    data, weights = trained
    return run("verify", "--onnx", path, "--spec", CIFAR, "--weights", weights, "--data", data, "--eval-size", size,
               *extra)


def _points(fraction: float) -> str:
    text = f"{100 * fraction:.1f}"
    return "0.0" if text == "-0.0" else text


def test_a_correct_quantization_passes_and_prints_the_numbers_it_rests_on(export: tuple[Path, Result],
                                                                           run: Run) -> None:
    out, result = export
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "Tango" in manifest["verification"]["rule"] and "confident_margin" in manifest["verification"]["rule"]
    int8 = next(r for r in manifest["verification"]["results"] if r["artifact"] == "model.int8.onnx")
    drop, agreement = int8["outputs"][0]["drop"], int8["outputs"][0]["agreement"]
    assert drop["images"] == 256 and drop["outcome"] in ("within", "undecided") and drop["lower"] <= 0.01
    line = (f"judged     model.int8.onnx on onnxruntime-cpu, logits: accuracy drop {_points(drop['drop'])} points "
            f"(95 % bounds {_points(drop['lower'])}..{_points(drop['upper'])}) on 256 images, {drop['changed']} "
            "changed class")
    assert line in result.output
    assert (f"top-1 agreement on the {agreement['confident']} of 256 images the reference is confident on"
            in result.output)
    if drop["outcome"] == "undecided":  # then it says how many images would show the drop within 1 point
        assert f"about {drop['images_needed']:,} would" in result.output
    again = run("verify", out)  # re-applies the manifest's rule to the same images: the same numbers
    assert again.exit_code == 0, again.output
    assert line in again.output and "verification passed" in again.output


@pytest.mark.parametrize("size", SIZES)
def test_a_doubled_weight_scale_fails_and_explain_names_its_block_first(doubled_scale: Path, trained: Trained,
                                                                        run: Run, size: int) -> None:
    result = _verify(run, doubled_scale, trained, size, "--explain")
    assert result.exit_code == 1, result.output
    failures = [line for line in result.output.splitlines() if line.startswith("FAIL       scaled.int8.onnx")]
    assert any(f"on {size:,} images" in line and "exceeds 1 point (even its lower bound does)" in line
               for line in failures), result.output
    findings = [line.strip() for line in result.output.splitlines() if line.strip().startswith("int8 ")]
    assert findings[0].startswith("int8 verdict failed on onnxruntime-cpu: accuracy drop"), findings
    assert next(f for f in findings if f.startswith("int8 loss #")).startswith(f"int8 loss #1: {BROKEN_BLOCK}")
    assert "no block leaves" not in result.output


def test_activations_calibrated_on_another_distribution_fail(export: tuple[Path, Result], trained: Trained,
                                                             run: Run, tmp_path: Path) -> None:
    from exporters.calibration import DataSource, load_images
    from exporters.onnx.export import serialize
    from exporters.onnx.quantize import quantize_int8
    from xception_build import load_spec

    data, _ = trained
    bright = load_images(DataSource(str(data), 64, 1), load_spec(CIFAR))[0] * 16  # ranges 16x too wide
    path = tmp_path / "bright.int8.onnx"
    path.write_bytes(serialize(quantize_int8(onnx.load(export[0] / "model.onnx"), bright, activations="asymmetric")))
    for size in SIZES:
        result = _verify(run, path, trained, size)
        assert result.exit_code == 1, result.output
        assert "FAIL       bright.int8.onnx on onnxruntime-cpu" in result.output


def test_the_verdict_flips_where_the_accuracy_drop_tolerance_crosses_the_lower_bound(
        doubled_scale: Path, trained: Trained, run: Run) -> None:
    stated = _verify(run, doubled_scale, trained, 64, "--json")
    assert stated.exit_code == 1
    report = json.loads(stated.output[:stated.output.rindex("}") + 1])
    lower = report["comparisons"][0]["outputs"][0]["drop"]["lower"]
    assert lower > 0.01
    # the documented rule: fail when the lower bound exceeds the tolerance (agreement set aside here)
    below = _verify(run, doubled_scale, trained, 64, "--tolerance", f"accuracy-drop={100 * lower * 0.999!r}",
                    "--tolerance", "min-top1=0")
    above = _verify(run, doubled_scale, trained, 64, "--tolerance", f"accuracy-drop={100 * lower * 1.001!r}",
                    "--tolerance", "min-top1=0")
    assert below.exit_code == 1 and "exceeds" in below.output, below.output
    assert above.exit_code == 0, above.output
    assert "too few held-out images to show a drop within" in above.output  # passed, and says why not "within"


def test_synthetic_images_are_not_judged_unless_asked(trained: Trained, run: Run, tmp_path: Path) -> None:
    _, weights = trained
    common = ("export", CIFAR, "--weights", weights, "--precision", "int8", "--calib", "synthetic", "--calib-size",
              "16", "--eval-size", "64", "--batch", "1:8:16")
    out = tmp_path / "synthetic"
    result = run(*common, "--out", out)
    assert result.exit_code == 4, result.output  # neither 0 "verified" nor 1 "failed"
    assert "warning: --calib synthetic" in result.output and "mean little" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("model.int8.onnx  onnxruntime-cpu"))
    assert row.endswith("not judged") and "64 synthetic" in row
    assert "not judged model.int8.onnx on onnxruntime-cpu: agreement and accuracy not judged on 64 synthetic" \
        in result.output
    assert "error: not judged: model.int8.onnx ran on synthetic images only" in result.output
    assert (out / "model.int8.onnx").is_file()  # installed, like a failure, and recorded as such
    manifest = json.loads((out / "manifest.json").read_text())["verification"]
    int8 = next(r for r in manifest["results"] if r["artifact"] == "model.int8.onnx")
    assert manifest["verdict"] == "not judged" and int8["verdict"] == "not judged" and not manifest["judge_synthetic"]
    assert int8["outputs"][0]["agreement"] is None

    junit = tmp_path / "verify.xml"
    again = run("verify", out, "--json", "--junit", junit)
    assert again.exit_code == 4
    assert json.loads(again.output[:again.output.rindex("}") + 1])["verdict"] == "not judged"
    suite = ET.parse(junit).getroot()
    assert suite.find("properties/property[@name='verdict']").get("value") == "not judged"  # type: ignore[union-attr]
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    numeric = next(c for (kind, name), c in cases.items()
                   if kind == "numeric.onnxruntime-cpu" and name.startswith("model.int8.onnx batch="))
    assert numeric.find("skipped").get("message", "").startswith("not judged: ")  # type: ignore[union-attr]
    assert cases[("verification", "verdict")].find("skipped") is not None and suite.get("failures") == "0"

    judged = run("verify", out, "--judge-synthetic", "--json")  # asked for: agreement judged, 0 or 1
    assert judged.exit_code in (0, 1), judged.output
    data = json.loads(judged.output[:judged.output.rindex("}") + 1])
    comparison = next(c for c in data["comparisons"] if c["artifact"] == "model.int8.onnx")
    assert data["verdict"] in ("passed", "failed") and comparison["outputs"][0]["agreement"]["samples"] == 64
    assert judged.exit_code == (0 if data["verdict"] == "passed" else 1)

    asked = run(*common, "--judge-synthetic", "--out", tmp_path / "asked")
    assert asked.exit_code in (0, 1), asked.output
    row = next(line for line in asked.output.splitlines() if line.startswith("model.int8.onnx  onnxruntime-cpu"))
    assert "top-1 agreement on the" in asked.output and row.split()[-1] in ("ok", "FAIL")
    recorded = json.loads((tmp_path / "asked" / "manifest.json").read_text())["verification"]
    assert recorded["judge_synthetic"] and recorded["verdict"] == ("passed" if asked.exit_code == 0 else "failed")
    assert run("verify", tmp_path / "asked").exit_code == asked.exit_code  # the folder's choice is re-applied
