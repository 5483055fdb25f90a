"""OpenVINO as a backend: ``xbuild export --openvino`` writes IR that is listed, hashed and verified
on ``openvino-cpu``; ``xbuild verify`` re-checks it; broken or foreign IR is refused in one line;
a machine without OpenVINO says so with exit 3; the bench times it beside ONNX Runtime."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from exporters.bench.peaks import cpu_isa_flags
from exporters.manifest import MANIFEST_NAME
from exporters.openvino.ir import openvino_unavailable
from xception_build.files import sha256_file

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "specs" / "xception_cifar.yaml"
Run = Callable[..., Result]

pytestmark = pytest.mark.skipif(openvino_unavailable() is not None, reason=str(openvino_unavailable()))
HAS_BF16 = bool({"amx_bf16", "avx512_bf16"} & set(cpu_isa_flags()))


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST_NAME).read_text())


def _rehash(folder: Path, name: str) -> None:
    """Record ``name``'s current bytes in the manifest: the folder is then what an export that wrote
    those bytes would have left (its hashes all match)."""
    data = _manifest(folder)
    entry = next(a for a in data["artifacts"] if a["path"] == name)
    entry["sha256"], entry["bytes"] = sha256_file(folder / name), (folder / name).stat().st_size
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def ir_export(tmp_path_factory: pytest.TempPathFactory, run: Run, cifar_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("openvino-export")
    result = run("export", CIFAR, "--weights", cifar_weights, "--openvino", "--batch", "1:2:4", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def ir_copy(ir_export: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(ir_export, target)
    return target


def test_export_writes_verified_ir_and_verify_rechecks_it(ir_export: Path, run: Run) -> None:
    data = _manifest(ir_export)
    kinds = {a["path"]: a["kind"] for a in data["artifacts"]}
    # --openvino alone installs the IR, not the ONNX it was made from
    assert kinds == {"model.xml": "openvino-ir", "model.bin": "openvino-weights",
                     "weights.safetensors": "weights", "spec.resolved.yaml": "spec"}
    for art in data["artifacts"]:
        assert sha256_file(ir_export / art["path"]) == art["sha256"]
    results = data["verification"]["results"]
    assert {(r["artifact"], r["backend"]) for r in results} == {("model.xml", "openvino-cpu")}
    assert {r["batch"] for r in results} == {1, 2, 4} and all(r["passed"] for r in results)
    assert data["export"]["openvino"] == {"precision": "auto"}
    assert "openvino" in data["versions"]

    again = run("verify", ir_export, "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.output)
    assert report["verdict"] == "passed"
    assert {c["backend"] for c in report["comparisons"]} == {"openvino-cpu"}


def test_onnx_and_openvino_together_are_both_verified(tmp_path: Path, run: Run, cifar_weights: Path) -> None:
    result = run("export", CIFAR, "--weights", cifar_weights, "--onnx", "--openvino", "--batch", "2",
                 "--out", tmp_path / "both", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output[result.output.index("{"):])
    compared = {(r["artifact"], r["backend"]) for r in manifest["verification"]["results"]}
    assert {("model.onnx", "onnxruntime-cpu"), ("model.xml", "openvino-cpu")} <= compared


def test_a_missing_bin_fails_and_names_it(ir_copy: Path, run: Run) -> None:
    (ir_copy / "model.bin").unlink()
    result = run("verify", ir_copy)
    assert result.exit_code == 1, result.output
    assert "model.bin: FAIL: missing" in result.output
    assert "verification passed" not in result.output and "Traceback" not in result.output


def test_an_edited_xml_fails_as_changed(ir_copy: Path, run: Run) -> None:
    xml = ir_copy / "model.xml"
    xml.write_text(xml.read_text().replace('element_type="f32"', 'element_type="f16"', 1))
    result = run("verify", ir_copy)
    assert result.exit_code == 1, result.output
    assert "model.xml: FAIL: changed" in result.output
    assert "verification passed" not in result.output


def test_an_ir_written_by_another_openvino_release_is_refused_in_one_line(ir_copy: Path, run: Run) -> None:
    xml = ir_copy / "model.xml"
    text, count = re.subn(r'(<info name="OpenVINO Runtime" value=")[^"]*"', r'\g<1>2099.1.0-1-abc"', xml.read_text())
    assert count == 1, "the IR no longer records the release that wrote it where this test looks"
    xml.write_text(text)
    _rehash(ir_copy, "model.xml")  # as if another release had written the whole export
    result = run("verify", ir_copy)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "written by OpenVINO 2099.1.0" in errors[0], result.output
    assert "verification passed" not in result.output and "Traceback" not in result.output


def test_an_ir_without_its_weights_in_the_manifest_is_not_verifiable(ir_copy: Path, run: Run) -> None:
    data = _manifest(ir_copy)
    data["artifacts"] = [a for a in data["artifacts"] if a["kind"] != "openvino-weights"]
    (ir_copy / MANIFEST_NAME).write_text(json.dumps(data))
    result = run("verify", ir_copy)
    assert result.exit_code == 1, result.output
    assert "without its weights file model.bin" in result.output


def test_the_ir_of_another_spec_is_named_as_a_different_model(ir_copy: Path, run: Run, tmp_path: Path) -> None:
    other = tmp_path / "other"
    made = run("export", CIFAR, "--set", "head.num_classes=5", "--openvino", "--batch", "2", "--out", other)
    assert made.exit_code == 0, made.output
    shutil.copyfile(other / "model.xml", ir_copy / "model.xml")
    result = run("verify", ir_copy)
    assert result.exit_code == 1, result.output
    assert "model.xml: FAIL: a different model" in result.output


def test_openvino_precision_is_recorded_and_checked(tmp_path: Path, run: Run, cifar_weights: Path) -> None:
    out = tmp_path / "f32"
    result = run("export", CIFAR, "--weights", cifar_weights, "--openvino", "--openvino-precision", "f32",
                 "--batch", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert _manifest(out)["export"]["openvino"] == {"precision": "f32"}
    refused = run("export", CIFAR, "--openvino-precision", "f32", "--out", tmp_path / "no")
    assert refused.exit_code == 2 and "--openvino-precision goes with --openvino" in refused.output
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(HAS_BF16, reason="this CPU runs bf16: the refusal is for CPUs without bf16 instructions")
def test_bf16_pinned_on_a_cpu_without_bf16_is_not_run_rather_than_run_in_f32(ir_export: Path, run: Run) -> None:
    result = run("verify", ir_export, "--openvino-precision", "bf16")
    assert result.exit_code == 3, result.output
    assert "not run    model.xml on openvino-cpu" in result.output and "no AMX or AVX512-BF16" in result.output


@pytest.mark.skipif(not HAS_BF16, reason="needs a CPU with AMX-BF16 or AVX512-BF16 (this one has neither)")
def test_bf16_is_judged_by_the_bf16_rule(ir_export: Path, run: Run) -> None:
    result = run("verify", ir_export, "--openvino-precision", "bf16", "--json")
    assert result.exit_code == 0, result.output
    comparisons = json.loads(result.output)["comparisons"]
    assert comparisons and all(c["compute_precision"] == "bf16" for c in comparisons)


def test_without_openvino_export_exits_3_and_verify_says_not_run(ir_export: Path, tmp_path: Path) -> None:
    """A Python on which ``import openvino`` fails, as on a machine without the package."""
    blocker = tmp_path / "no-openvino" / "openvino"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named openvino')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}

    def xbuild(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xception_build.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=300)

    out = tmp_path / "out"
    exported = xbuild("export", CIFAR, "--openvino", "--out", out)
    assert exported.returncode == 3, exported.stderr
    assert "openvino is not installed: pip install 'xception-build[cpu]'" in exported.stderr
    assert not out.exists()
    verified = xbuild("verify", ir_export)
    assert verified.returncode == 3, verified.stdout + verified.stderr
    assert "not run    model.xml on openvino-cpu" in verified.stdout and "Traceback" not in verified.stderr


def test_export_sends_nothing_anywhere(tmp_path: Path, cifar_weights: Path) -> None:
    """``import openvino`` starts openvino-telemetry (a client id under ~/intel, a report of the
    import); the export must neither start it, nor write under the home folder, nor connect anywhere."""
    code = f"""
import socket, sys
attempts = []
def refuse(self, address, *args, **kwargs):
    attempts.append(address)
    raise OSError("no network in this test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
from click.testing import CliRunner
from exporters.cli import export_command
result = CliRunner().invoke(export_command, [{str(CIFAR)!r}, "--weights", {str(cifar_weights)!r}, "--openvino",
                                             "--batch", "2", "--out", {str(tmp_path / "out")!r}])
assert result.exit_code == 0, result.output
started = sorted(name for name in sys.modules if name.startswith("openvino_telemetry") and sys.modules[name])
print("telemetry", started, "connections", attempts)
"""
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "TF_BUILD", "JENKINS_URL")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHONPATH": str(ROOT), "HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "telemetry [] connections []"
    assert list(home.iterdir()) == []  # no ~/intel/openvino_ga_cid


def test_bench_times_openvino_beside_onnxruntime(run: Run) -> None:
    result = run("bench", CIFAR, "--backend", "onnxruntime-cpu,openvino-cpu", "--precision", "fp32,int8",
                 "--batch", "2", "--budget", "0", "--min-reps", "2", "--warmup", "0", "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {(r["backend"], r["precision"]): r for r in report["inference"]}
    assert set(rows) == {(b, p) for b in ("onnxruntime-cpu", "openvino-cpu") for p in ("fp32", "int8")}
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in rows.values()), rows
    assert rows[("openvino-cpu", "int8")]["int8_activations"] == "symmetric"
    # every row of the batch is timed against the first backend's fp32 row, side by side
    assert all(r["baseline"] == "onnxruntime-cpu fp32" for r in rows.values())
    assert rows[("onnxruntime-cpu", "fp32")]["vs_baseline"] == pytest.approx(1.0)
    assert report["environment"]["cpu_flags"] == list(cpu_isa_flags())
    assert report["environment"]["openvino"]
