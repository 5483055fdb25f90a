"""Hostile and careless export folders: every case ends in exit 1, 2 or 3 naming the problem, never "passed".

A green verdict means "these artifacts were checked numerically here, against this spec and these
weights": an empty manifest, paths leading out of the folder, swapped or substituted files, a
manifest of another export, weights changed behind the manifest's back, a backend that is missing
and a closed pipe are each tried the way a user (or an attacker) would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from exporters.manifest import MANIFEST_NAME
from exporters.tensorrt.engine import tensorrt_unavailable
from xception_build.files import sha256_file

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "specs" / "xception_cifar.yaml"
Run = Callable[..., Result]


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST_NAME).read_text())


def _write(folder: Path, data: dict[str, Any]) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2))


def _entry(data: dict[str, Any], path: str) -> dict[str, Any]:
    return next(a for a in data["artifacts"] if a["path"] == path)


def _never_passed(result: Result, code: int, *messages: str) -> None:
    assert result.exit_code == code, result.output
    assert "verification passed" not in result.output and "Traceback" not in result.output
    for message in messages:
        assert message in result.output, result.output


@pytest.fixture(scope="module")
def other_export(tmp_path_factory: pytest.TempPathFactory, run: Run) -> Path:
    """A second, complete export of a different network (5 classes) to swap things in from."""
    out = tmp_path_factory.mktemp("other-export")
    result = run("export", CIFAR, "--set", "head.num_classes=5", "--batch", "1:2:4", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_an_empty_artifact_list_is_not_a_pass(export_copy: Path, run: Run) -> None:
    data = _manifest(export_copy)
    data["artifacts"] = []
    _write(export_copy, data)
    _never_passed(run("verify", export_copy), 1, "manifest.json: FAIL: lists no spec",
                  "lists no weights",
                  "lists no model artifact (onnx, openvino-ir or tensorrt-plan): there is nothing to verify",
                  "unlisted   model.onnx: looks like an artifact but the manifest does not list it")


def test_a_missing_model_entry_is_not_a_pass_and_the_file_is_reported(export_copy: Path, run: Run) -> None:
    data = _manifest(export_copy)
    data["artifacts"] = [a for a in data["artifacts"] if a["path"] != "model.onnx"]
    _write(export_copy, data)
    _never_passed(run("verify", export_copy), 1, "lists no model artifact", "unlisted   model.onnx")


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_paths_outside_the_folder_are_never_read(export_copy: Path, tmp_path: Path, run: Run, where: str) -> None:
    """The file outside is a perfect copy with the recorded hash: reading it would have passed."""
    outside = tmp_path / "other" / "model.onnx"
    outside.parent.mkdir()
    shutil.copyfile(export_copy / "model.onnx", outside)
    data = _manifest(export_copy)
    path = str(outside) if where == "absolute" else "../other/model.onnx"
    _entry(data, "model.onnx")["path"] = path
    _write(export_copy, data)
    reason = "an absolute path" if where == "absolute" else "a path with '..'"
    _never_passed(run("verify", export_copy), 1, f"integrity  {path}: FAIL: {reason}", "not read")


def test_a_symlink_out_of_the_folder_is_never_read(export_copy: Path, tmp_path: Path, run: Run) -> None:
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(export_copy / "model.onnx", outside)
    (export_copy / "model.onnx").symlink_to(outside)
    _never_passed(run("verify", export_copy), 1,
                  "integrity  model.onnx: FAIL: a symlink that leads out of the export folder: not read")


def test_swapped_files_are_named_as_swapped(export_copy: Path, run: Run) -> None:
    onnx_file, weights = export_copy / "model.onnx", export_copy / "weights.safetensors"
    a, b = onnx_file.read_bytes(), weights.read_bytes()
    onnx_file.write_bytes(b)
    weights.write_bytes(a)
    _never_passed(run("verify", export_copy), 1,
                  "model.onnx: FAIL: swapped: its contents are what the manifest records for weights.safetensors")


def test_an_onnx_of_another_export_is_a_different_model_not_a_truncated_one(export_copy: Path, other_export: Path,
                                                                            run: Run) -> None:
    shutil.copyfile(other_export / "model.onnx", export_copy / "model.onnx")
    other_hash = _manifest(other_export)["spec"]["hash"]
    result = run("verify", export_copy)
    _never_passed(result, 1, "model.onnx: FAIL: a different model: its metadata says it was exported from spec "
                  f"'xception_cifar' (spec hash {other_hash[:12]}...)")
    assert "truncated" not in result.output


def test_a_manifest_from_another_export_is_not_a_pass(export_copy: Path, other_export: Path, run: Run) -> None:
    shutil.copyfile(other_export / MANIFEST_NAME, export_copy / MANIFEST_NAME)
    _never_passed(run("verify", export_copy), 1, "model.onnx: FAIL: ", "spec.resolved.yaml: FAIL: ",
                  "weights.safetensors: FAIL: ")


def test_a_whole_folder_of_another_export_with_its_manifest_swapped_in(export_copy: Path, other_export: Path,
                                                                       run: Run) -> None:
    """Every file consistent with the manifest except the spec: the spec hash gives it away."""
    data = _manifest(export_copy)
    for name in ("weights.safetensors", "model.onnx"):
        shutil.copyfile(other_export / name, export_copy / name)
        entry = _entry(data, name)
        entry["sha256"], entry["bytes"] = sha256_file(export_copy / name), (export_copy / name).stat().st_size
    shutil.copyfile(other_export / "spec.resolved.yaml", export_copy / "spec.resolved.yaml")
    entry = _entry(data, "spec.resolved.yaml")
    entry["sha256"] = sha256_file(export_copy / "spec.resolved.yaml")
    entry["bytes"] = (export_copy / "spec.resolved.yaml").stat().st_size
    _write(export_copy, data)
    _never_passed(run("verify", export_copy), 1, "spec.resolved.yaml: FAIL: resolves to spec hash",
                  "the manifest is not this export's")


def test_weights_changed_without_the_manifest(export_copy: Path, other_export: Path, run: Run) -> None:
    shutil.copyfile(other_export / "weights.safetensors", export_copy / "weights.safetensors")
    _never_passed(run("verify", export_copy), 1, "weights.safetensors: FAIL: changed: ",
                  "no numeric check ran: the spec or the weights are not what the manifest records")


def test_weights_changed_and_their_entry_removed(export_copy: Path, other_export: Path, run: Run) -> None:
    shutil.copyfile(other_export / "weights.safetensors", export_copy / "weights.safetensors")
    data = _manifest(export_copy)
    data["artifacts"] = [a for a in data["artifacts"] if a["path"] != "weights.safetensors"]
    _write(export_copy, data)
    _never_passed(run("verify", export_copy), 1, "lists no weights (weights.safetensors)",
                  "unlisted   weights.safetensors")


def _add_plan(folder: Path) -> None:
    """A TensorRT plan in the manifest (its bytes hash-correct): only TensorRT can check it numerically."""
    plan = folder / "model.plan"
    plan.write_bytes(b"a serialized engine")
    data = _manifest(folder)
    data["artifacts"].insert(1, {"path": "model.plan", "kind": "tensorrt-plan", "sha256": sha256_file(plan),
                                 "bytes": plan.stat().st_size, "precision": "fp32"})
    _write(folder, data)


@pytest.mark.skipif(tensorrt_unavailable() is None, reason="TensorRT and a GPU are here")
def test_a_plan_nothing_here_can_run_is_exit_3_unless_left_out_explicitly(export_copy: Path, tmp_path: Path,
                                                                          run: Run) -> None:
    _add_plan(export_copy)
    junit = tmp_path / "verify.xml"
    result = run("verify", export_copy, "--junit", junit)
    _never_passed(result, 3, "not verified: model.plan checked by no backend here (tensorrt: ",
                  "--backend onnxruntime-cpu")
    suite = ET.parse(junit).getroot()
    skipped = [c.get("name") for c in suite.iter("testcase") if c.get("classname") == "numeric.tensorrt"]
    assert skipped == ["model.plan batch=1", "model.plan batch=2", "model.plan batch=4"]
    assert any(c.get("name") == "verdict" and c.find("failure") is not None for c in suite.iter("testcase"))

    narrowed = run("verify", export_copy, "--backend", "onnxruntime-cpu")
    assert narrowed.exit_code == 0, narrowed.output
    assert "left out   model.plan: --backend onnxruntime-cpu runs no tensorrt-plan artifact" in narrowed.output
    assert "verification passed" in narrowed.output


def test_tensorrt_asked_for_an_export_without_a_plan_selects_nothing(cifar_export: Path, run: Run) -> None:
    _never_passed(run("verify", cifar_export, "--backend", "tensorrt"), 2,
                  "--backend tensorrt selects nothing to verify", "the export has model.onnx")


@pytest.mark.skipif(tensorrt_unavailable() is None, reason="TensorRT and a GPU are here")
def test_a_plan_that_is_the_only_artifact_and_cannot_run_here_is_exit_3(export_copy: Path, run: Run) -> None:
    _add_plan(export_copy)
    _never_passed(run("verify", export_copy, "--backend", "tensorrt"), 3, "not verified: model.plan")


def test_an_unlisted_artifact_is_reported_but_does_not_fail(export_copy: Path, run: Run) -> None:
    shutil.copyfile(export_copy / "model.onnx", export_copy / "model.fp16.onnx")
    result = run("verify", export_copy)
    assert result.exit_code == 0, result.output
    assert "unlisted   model.fp16.onnx: looks like an artifact but the manifest does not list it; not checked" \
        in result.output


def _xbuild() -> str:
    return str(Path(sys.executable).with_name("xbuild"))


@pytest.mark.skipif(not Path(sys.executable).with_name("xbuild").exists(), reason="xbuild is not installed")
@pytest.mark.parametrize("args", [["verify", "{dir}"], ["verify", "{dir}", "--json"], ["compile", str(CIFAR)]])
def test_a_closed_pipe_is_not_a_failure(cifar_export: Path, args: list[str]) -> None:
    """`xbuild verify DIR | head -1`: the reader goes away early; exit 0, nothing on stderr, every time."""
    command = " ".join([_xbuild(), *(a.format(dir=cifar_export) for a in args)])
    for _ in range(3):
        done = subprocess.run(["bash", "-o", "pipefail", "-c", f"{command} 2>err.txt | head -c 1 >/dev/null; "
                               "echo ${PIPESTATUS[0]}; cat err.txt"], capture_output=True, text=True,
                              cwd=cifar_export.parent, timeout=300)
        code, _, stderr = done.stdout.partition("\n")
        assert code == "0", done.stdout + done.stderr
        assert "BrokenPipe" not in stderr and "Traceback" not in stderr and "error" not in stderr, stderr


@pytest.mark.skipif(not Path(sys.executable).with_name("xbuild").exists(), reason="xbuild is not installed")
def test_a_closed_pipe_keeps_a_failed_verdict(export_copy: Path) -> None:
    (export_copy / "spec.resolved.yaml").write_text("tampered")
    done = subprocess.run(["bash", "-c", f"{_xbuild()} verify {export_copy} | head -c 1 >/dev/null; "
                           "echo ${PIPESTATUS[0]}"], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "1", done.stdout + done.stderr
