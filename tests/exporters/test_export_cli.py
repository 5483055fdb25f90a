"""``xbuild export`` on bad input: one clear message, the documented exit code, the folder intact."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from exporters.tensorrt_backend import tensorrt_unavailable

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
    _assert_clean_error(run("export", CIFAR, "--out", blocker / "out"), 2, "cannot write there")
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
    """Die half-way through writing the weights: the previous export is untouched, no temp folder stays."""
    import xception_build.weights

    def half_written(model: object, path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"\x00" * 1000)
        raise KeyboardInterrupt

    before = digest(export_copy)
    monkeypatch.setattr(xception_build.weights, "save_weights", half_written)
    result = run("export", CIFAR, "--batch", "1:2:4", "--out", export_copy)
    assert result.exit_code == 130 and "interrupted" in result.output  # Ctrl-C: exit 130, not 1
    assert digest(export_copy) == before
    assert not [p for p in export_copy.iterdir() if p.name.startswith(".")]


def test_interrupted_install_leaves_complete_files_and_no_manifest(
        export_copy: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[..., Result]) -> None:
    """Die between two renames: every file is whole, and without a manifest verify says so."""
    import exporters.pipeline

    real_replace = os.replace
    calls = []

    def replace_then_die(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(exporters.pipeline.os, "replace", replace_then_die)
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


def test_bench_command_is_exported() -> None:
    from exporters.cli import bench_command

    assert bench_command.name == "bench"


def test_export_and_verify_load_without_bench_cli() -> None:
    """A missing or broken exporters/bench_cli.py costs `bench` only, with a clean exit 3."""
    code = """
import sys
sys.modules["exporters.bench_cli"] = None  # makes the import fail like a missing file
from click.testing import CliRunner
from exporters.cli import bench_command, export_command, verify_command
from xception_build.cli import XBuildGroup
group = XBuildGroup(commands={"bench": bench_command, "export": export_command, "verify": verify_command})
result = CliRunner().invoke(group, ["bench"])
print(result.exit_code, result.output)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("3 error: xbuild bench could not be loaded"), done.stdout + done.stderr
