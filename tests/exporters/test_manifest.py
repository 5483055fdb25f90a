"""The manifest: complete, atomic, versioned; artifacts that changed are named for what happened."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from exporters.manifest import FORMAT_VERSION, read_manifest
from exporters.verify.integrity import check_folder
from xception_build.errors import UserError
from xception_build.files import atomic_write

CIFAR = Path(__file__).resolve().parents[2] / "specs" / "xception_cifar.yaml"


def test_manifest_records_artifacts_spec_versions_and_verification(cifar_export: Path) -> None:
    manifest = read_manifest(cifar_export)
    assert manifest.format_version == FORMAT_VERSION
    assert {a.path for a in manifest.artifacts} == {"model.onnx", "weights.safetensors", "spec.resolved.yaml"}
    assert all(len(a.sha256) == 64 and a.bytes > 0 for a in manifest.artifacts)
    assert len(manifest.spec.hash) == 64 and manifest.spec.resolved["name"] == "xception_cifar"
    assert {"python", "torch", "onnx", "onnxruntime", "xception-build"} <= set(manifest.versions)
    assert manifest.export["batch_profile"] == "1:2:4" and manifest.export["opset"] == 18
    assert manifest.model.input_size == [3, 32, 32]
    verification = manifest.verification
    assert verification.passed and verification.batches == [1, 2, 4]
    assert {"fp32", "fp16"} <= set(verification.tolerances)
    assert {r["batch"] for r in verification.results} == {1, 2, 4}
    assert all(c.passed for c in check_folder(cifar_export, manifest))


def _edit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _swap(path: Path) -> None:
    other = path.with_name("weights.safetensors")
    a, b = path.read_bytes(), other.read_bytes()
    path.write_bytes(b)
    other.write_bytes(a)


SWAPPED = "swapped: its contents are what the manifest records for weights.safetensors"


@pytest.mark.parametrize(("tamper", "problem"), [
    (_edit, "changed: same size; sha256"), (_truncate, "changed: "), (_swap, SWAPPED), (Path.unlink, "missing"),
])
def test_tampered_artifact_is_caught_by_the_hash_check(export_copy: Path, run: Callable[..., Result],
                                                       tamper: Callable[[Path], None], problem: str) -> None:
    tamper(export_copy / "model.onnx")
    checks = {c.path: c.problem for c in check_folder(export_copy, read_manifest(export_copy))}
    assert checks["model.onnx"] is not None and checks["model.onnx"].startswith(problem)
    result = run("verify", export_copy)
    assert result.exit_code == 1, result.output
    assert f"integrity  model.onnx: FAIL: {problem}" in result.output
    assert "unchecked  model.onnx: its integrity check failed" in result.output  # says what it did not check


def test_edited_spec_stops_the_numeric_checks(export_copy: Path, run: Callable[..., Result]) -> None:
    spec = export_copy / "spec.resolved.yaml"
    spec.write_text(spec.read_text().replace("num_classes: 10", "num_classes: 11"))
    result = run("verify", export_copy)
    assert result.exit_code == 1
    assert "spec.resolved.yaml: FAIL: changed" in result.output
    assert "unchecked  model.onnx: no numeric check ran: the spec or the weights are not what the manifest records" \
        in result.output


def test_manifest_of_a_newer_format_is_a_clean_user_error(export_copy: Path,
                                                          run: Callable[..., Result]) -> None:
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(data))
    result = run("verify", export_copy)
    assert result.exit_code == 2
    assert f"manifest format version {FORMAT_VERSION + 1} is newer than this xbuild reads" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not a readable JSON manifest"),
    ("[1, 2]", "no integer format_version"),
    ('{"format_version": 3, "tool": {}}', "malformed manifest at versions"),
    ('{"format_version": 2, "tool": {}}', r"records fixed-threshold tolerances \(int8: 99 % top-1 agreement"),
    ('{"format_version": 1, "tool": {}}', r"records absolute tolerances \(atol/rtol\)"),
])
def test_broken_manifest_is_a_clean_user_error(export_copy: Path, content: str, message: str) -> None:
    (export_copy / "manifest.json").write_text(content)
    with pytest.raises(UserError, match=message):
        read_manifest(export_copy)


def test_missing_manifest_means_an_incomplete_export(export_copy: Path, run: Callable[..., Result]) -> None:
    (export_copy / "manifest.json").unlink()
    result = run("verify", export_copy)
    assert result.exit_code == 2
    assert "is not a complete export" in result.output


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def fail(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new contents")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


def _set(section: str, key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda data: data[section].__setitem__(key, value)


def _drop(section: str, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data[section].pop(key)


def _tolerance(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["verification"]["tolerances"]["fp32"].__setitem__(field, value)


@pytest.mark.parametrize(("edit", "field"), [
    (_drop("spec", "hash"), "spec.hash"),
    (lambda data: data.__setitem__("spec", "abc"), "spec"),
    (_drop("model", "input_size"), "model.input_size"),
    (_set("model", "input_size", [3, 0, 32]), "model.input_size.1"),
    (_set("model", "input_size", [3, 64, 64]), "model.input_size"),  # not what the spec's model takes
    (_drop("verification", "tolerances"), "verification.tolerances"),
    (_drop("verification", "batches"), "verification.batches"),
    (_set("verification", "batches", [0, 2]), "verification.batches.0"),
    (_set("verification", "batches", []), "verification.batches"),
    (_set("verification", "seed", -1), "verification.seed"),
    (_set("verification", "seed", "abc"), "verification.seed"),
    (_drop("verification", "seed"), None),  # optional: seed 0, as before
    (_tolerance("max_error", "tight"), "verification.tolerances.fp32.max_error"),
    (_tolerance("min_cosine", float("nan")), "verification.tolerances"),
    (_tolerance("min_cosine", -1), "verification.tolerances"),
    (lambda data: data["verification"]["tolerances"].__setitem__("fp32", 3), "verification.tolerances.fp32"),
    (lambda data: data["verification"]["tolerances"].pop("fp32"), "verification.tolerances"),  # model.onnx is fp32
])
def test_malformed_manifest_section_is_one_clean_user_error(export_copy: Path, run: Callable[..., Result],
                                                            edit: Callable[[dict[str, Any]], None],
                                                            field: str | None) -> None:
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    result = run("verify", export_copy)
    assert "Traceback" not in result.output
    if field is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    assert f"error: {path}: malformed manifest at {field}:" in result.output


def test_a_new_export_removes_only_plain_stale_files(cifar_export: Path, tmp_path: Path,
                                                    run: Callable[..., Result]) -> None:
    """Entries of the previous manifest that are not plain file names in the folder ("", ".", "..",
    paths, folders) are never unlinked by the next export into it; a stale plain file is."""
    from exporters.manifest import write_manifest

    manifest = read_manifest(cifar_export)
    out = tmp_path / "out"
    shutil.copytree(cifar_export, out)
    (out / "stale.bin").write_bytes(b"from the previous export")
    (out / "a_folder").mkdir()
    (tmp_path / "outside.txt").write_text("not ours")
    weird = ["", ".", "..", "a_folder", "../outside.txt", "sub/x", "stale.bin"]
    previous = [*manifest.artifacts, *(manifest.artifacts[0].model_copy(update={"path": p}) for p in weird)]
    write_manifest(out, manifest.model_copy(update={"artifacts": previous}))

    result = run("export", CIFAR, "--batch", "1:2:4", "--out", out)
    assert result.exit_code == 0, result.output
    assert not (out / "stale.bin").exists()
    assert (out / "a_folder").is_dir() and (tmp_path / "outside.txt").read_text() == "not ours"
    new = read_manifest(out)
    assert all(c.passed for c in check_folder(out, new))
