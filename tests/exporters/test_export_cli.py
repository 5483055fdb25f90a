"""``xbuild export`` on bad input: one clear message, the documented exit code, the folder intact."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from exporters.tensorrt.engine import tensorrt_unavailable

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "specs" / "xception_cifar.yaml"
Digest = Callable[[Path], dict[str, str]]


def _assert_clean_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("batch", "message"), [
    ("1:8", "--batch '1:8': expected MIN:OPT:MAX"), ("8:4:16", "need 1 <= MIN <= OPT <= MAX"),
    ("x", "expected MIN:OPT:MAX"),
])
def test_bad_batch_leaves_the_folder_intact(export_copy: Path, digest: Digest, run: Callable[..., Result],
                                            batch: str, message: str) -> None:
    before = digest(export_copy)
    _assert_clean_error(run("export", CIFAR, "--batch", batch, "--out", export_copy), 2, message)
    assert digest(export_copy) == before


def test_spec_that_does_not_compile(export_copy: Path, digest: Digest, tmp_path: Path,
                                    run: Callable[..., Result]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nentry:\n  blocks: [{out: -3}]\n")
    before = digest(export_copy)
    result = run("export", broken, "--out", export_copy)
    assert result.exit_code == 2, result.output
    assert "broken.yaml" in result.output and "Traceback" not in result.output
    assert digest(export_copy) == before


def test_weights_that_do_not_fit(export_copy: Path, digest: Digest, tmp_path: Path,
                                 run: Callable[..., Result]) -> None:
    from xception_build import build_model
    from xception_build.weights import save_weights

    other = tmp_path / "five_classes.safetensors"
    save_weights(build_model(CIFAR, overrides=["head.num_classes=5"]), other)
    before = digest(export_copy)
    result = run("export", CIFAR, "--weights", other, "--out", export_copy)
    assert result.exit_code == 2, result.output
    assert "five_classes.safetensors" in result.output and "Traceback" not in result.output
    assert digest(export_copy) == before


def test_unwritable_output_folder(tmp_path: Path, run: Callable[..., Result]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _assert_clean_error(run("export", CIFAR, "--out", blocker / "out"), 2,
                        f"--out {blocker / 'out'}: cannot create a folder there: {blocker} is a file")
    _assert_clean_error(run("export", CIFAR, "--out", blocker), 2, f"--out {blocker}: is a file, expected a folder")
    assert blocker.read_text() == "not a folder"


def test_trt_without_tensorrt_is_exit_3_before_any_work(export_copy: Path, digest: Digest,
                                                        run: Callable[..., Result]) -> None:
    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here")
    before = digest(export_copy)
    result = run("export", CIFAR, "--trt", "--out", export_copy)
    _assert_clean_error(result, 3, "TensorRT backend unavailable:")
    assert "pip install 'xception-build[trt]'" in result.output or "GPU" in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1  # one line saying what is missing and how to get it
    assert digest(export_copy) == before


def test_interrupted_export_leaves_no_truncated_file(export_copy: Path, digest: Digest,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     run: Callable[..., Result]) -> None:
    """Die while the weights are being written: the previous export is untouched, no temp folder stays."""
    import safetensors.torch

    def interrupted(*_args: object, **_kwargs: object) -> bytes:
        raise KeyboardInterrupt

    before = digest(export_copy)
    monkeypatch.setattr(safetensors.torch, "save", interrupted)
    result = run("export", CIFAR, "--batch", "1:2:4", "--out", export_copy)
    assert result.exit_code == 130 and "interrupted" in result.output  # Ctrl-C: exit 130, not 1
    assert digest(export_copy) == before
    assert not [p for p in export_copy.iterdir() if p.name.startswith(".")]


def test_interrupted_install_leaves_complete_files_and_no_manifest(
        export_copy: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[..., Result]) -> None:
    """Die between two renames into the folder: every file is whole, and without a manifest verify says so."""
    real_replace = os.replace
    calls = []

    def replace_then_die(src: str | Path, dst: str | Path) -> None:
        if Path(dst).parent == export_copy:
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    result = run("export", CIFAR, "--batch", "1:2:4", "--out", export_copy)
    assert result.exit_code == 130 and "interrupted" in result.output  # Ctrl-C: exit 130, not 1
    monkeypatch.undo()
    assert not (export_copy / "manifest.json").exists()
    import onnx

    onnx.checker.check_model(onnx.load(export_copy / "model.onnx"))  # renamed whole, never truncated
    assert not [p for p in export_copy.iterdir() if p.name.startswith(".")]
    verified = run("verify", export_copy)
    assert verified.exit_code == 2 and "not a complete export" in verified.output


def test_help_texts_document_examples_and_exit_codes(run: Callable[..., Result]) -> None:
    for command in ("export", "verify"):
        text = run(command, "--help").output
        assert "Examples:" in text
        for code in ("0  success", "1  a numeric verification ran and failed", "2  user error",
                     "3  a backend"):
            assert code in text, (command, code)


def test_formats_are_chosen_by_onnx_and_trt(tmp_path: Path, run: Callable[..., Result]) -> None:
    plain = run("export", CIFAR, "--batch", "1:2:4", "--out", tmp_path / "default")
    explicit = run("export", CIFAR, "--onnx", "--batch", "1:2:4", "--out", tmp_path / "onnx")
    assert plain.exit_code == explicit.exit_code == 0, plain.output + explicit.output
    for folder in ("default", "onnx"):
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert names == ["manifest.json", "model.onnx", "report.html", "spec.resolved.yaml", "weights.safetensors"]
    if tensorrt_unavailable() is not None:  # --trt alone still needs TensorRT: nothing is written
        trt_only = run("export", CIFAR, "--trt", "--out", tmp_path / "trt")
        assert trt_only.exit_code == 3 and not (tmp_path / "trt").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_bad_workspace_size_is_a_clean_user_error(tmp_path: Path, run: Callable[..., Result], value: str) -> None:
    out = tmp_path / "out"
    result = run("export", CIFAR, f"--workspace-gib={value}", "--out", out)
    _assert_clean_error(result, 2, "must be a finite number > 0")
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--opset", "5"], "--opset 5: the dynamo exporter supports opsets 18 to"),
    (["--opset", "999"], "--opset 999: the dynamo exporter supports opsets 18 to"),
    (["--static-batch", "--batch", "1:2:4"], "--static-batch needs one batch size, got the profile 1:2:4"),
    (["--batch", "8:4:16"], "need 1 <= MIN <= OPT <= MAX"),
    (["--tolerance", "max_error=-1"], "--tolerance max_error=-1: must be a finite number >= 0"),
    (["--tolerance", "atol=1e-4"], "--tolerance atol: unknown bound; choose from max-error, min-cosine"),
    (["--tolerance", "accuracy-drop=150"], "--tolerance accuracy-drop=150: in points, at most 100"),
    (["--judge-synthetic"], "--judge-synthetic goes with --precision int8 --calib synthetic"),
    (["--precision", "int8"], "--precision int8 needs --calib DATA"),
    (["--calib", "synthetic"], "--calib-exclude and --int8-activations go with --precision int8"),
    (["--workspace-gib", "0"], "--workspace-gib 0.0: must be a finite number > 0"),
])
def test_bad_options_fail_before_any_work_and_create_no_folder(tmp_path: Path, run: Callable[..., Result],
                                                                args: list[str], message: str) -> None:
    """The spec does not exist: an option error, not "file not found", proves options come first."""
    out = tmp_path / "new" / "out"
    result = run("export", tmp_path / "no_such_spec.yaml", *args, "--out", out)
    _assert_clean_error(result, 2, message)
    assert "exporting" not in result.output and "no_such_spec" not in result.output
    assert not (tmp_path / "new").exists()  # "exactly as before": not even an empty folder


def test_failed_export_removes_the_folders_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      run: Callable[..., Result]) -> None:
    import safetensors.torch

    def interrupted(*_args: object, **_kwargs: object) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save", interrupted)
    (tmp_path / "existing").mkdir()
    out = tmp_path / "existing" / "new" / "out"
    result = run("export", CIFAR, "--batch", "1:2:4", "--out", out)
    assert result.exit_code == 130, result.output
    assert list((tmp_path / "existing").iterdir()) == []  # new/out gone, the folder that was there kept


def test_onnx_metadata_and_manifest_record_the_same_provenance(tmp_path: Path,
                                                                run: Callable[..., Result]) -> None:
    import onnx

    from exporters.manifest import read_manifest

    result = run("export", CIFAR, "--batch", "1:2:4", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path)
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "model.onnx").metadata_props}
    assert metadata["xbuild.spec_hash"] == manifest.spec.hash
    assert metadata["xbuild.version"] == manifest.tool["version"] == manifest.versions["xception-build"]


def test_export_and_verify_load_without_the_bench() -> None:
    """A missing or broken exporters/bench/cli.py costs `bench` only, with a clean exit 3 from the group."""
    code = """
import sys
sys.modules["exporters.bench.cli"] = None  # makes the import fail like a missing file
from click.testing import CliRunner
from xception_build.cli import main
runner = CliRunner()
bench, export, verify = (runner.invoke(main, args) for args in (["bench"], ["export", "--help"],
                                                                 ["verify", "--help"]))
print(bench.exit_code, export.exit_code, verify.exit_code)
print(bench.output)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    codes, _, output = done.stdout.partition("\n")
    assert codes == "3 0 0", done.stdout + done.stderr
    assert output.startswith("error: ") and "bench" in output and "Traceback" not in output
