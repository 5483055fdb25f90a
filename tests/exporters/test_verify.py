"""Verification: numbers against PyTorch on every backend here, with a clear account of failures."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import Result
from onnx import numpy_helper
from tampering import drift_block

from exporters.onnx.runtime import onnxruntime_unavailable
from exporters.verify.checks import VerificationResult, seeded_input
from exporters.verify.directory import verify_directory

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "specs" / "xception_cifar.yaml"
PERTURBED = "middle.blocks.1.main.sep2.pw.weight"


def _perturb(source: Path, target: Path, name: str = PERTURBED, delta: float = 0.5) -> None:
    proto = onnx.load(source)
    for tensor in proto.graph.initializer:
        if tensor.name == name:
            array = numpy_helper.to_array(tensor).copy()
            array.flat[7] += delta
            tensor.CopyFrom(numpy_helper.from_array(array, name))
            break
    else:
        raise AssertionError(f"no initializer {name}")
    onnx.save(proto, target)


def test_export_directory_verifies(cifar_export: Path, run: Callable[..., Result]) -> None:
    result = run("verify", cifar_export)
    assert result.exit_code == 0, result.output
    assert "integrity  model.onnx: ok" in result.output
    assert "verification passed" in result.output
    if onnxruntime_unavailable("cuda"):  # says which backend it could not run, and why
        assert "not run    model.onnx on onnxruntime-cuda (batch 1, 2, 4):" in result.output


def test_user_brought_onnx_verifies_against_spec_and_weights(cifar_export: Path, cifar_weights: Path,
                                                             run: Callable[..., Result]) -> None:
    result = run("verify", "--onnx", cifar_export / "model.onnx", "--spec", CIFAR, "--weights", cifar_weights)
    assert result.exit_code == 0, result.output
    assert "batch" in result.output and " 4 " in result.output  # its own profile 1:2:4, max included


def test_perturbed_weight_fails_and_is_located(cifar_export: Path, cifar_weights: Path, tmp_path: Path,
                                               run: Callable[..., Result]) -> None:
    bad = tmp_path / "bad.onnx"
    _perturb(cifar_export / "model.onnx", bad)
    result = run("verify", "--onnx", bad, "--spec", CIFAR, "--weights", cifar_weights)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    assert "verification failed" in result.output
    assert "would pass with max_error >=" in result.output  # by how much
    assert f"weight differs from the spec+weights export: {PERTURBED}: 1 value(s) differ, max |diff| 0.5" \
        in result.output  # and where


def test_perturbed_weight_in_an_export_folder_fails_numerically(export_copy: Path, tmp_path: Path) -> None:
    """Even with the manifest's hash updated (an exporter bug, not tampering) the numbers catch it."""
    from exporters.manifest import describe, read_manifest, write_manifest

    _perturb(export_copy / "model.onnx", export_copy / "model.onnx")
    manifest = read_manifest(export_copy)
    artifacts = [describe(export_copy, a.path, a.kind, a.precision) if a.path == "model.onnx" else a
                 for a in manifest.artifacts]
    write_manifest(export_copy, manifest.model_copy(update={"artifacts": artifacts}))
    result = verify_directory(export_copy)
    assert all(c.passed for c in result.artifact_checks)
    failed = [c for c in result.comparisons if not c.passed]
    assert failed and {c.batch for c in failed} == {1, 2, 4}
    assert all(c.outputs[0].max_abs > 1e-3 for c in failed)


def test_export_that_fails_verification_exits_1_with_the_table(cifar_weights: Path, tmp_path: Path,
                                                               run: Callable[..., Result]) -> None:
    result = run("export", CIFAR, "--weights", cifar_weights, "--batch", "1:1:2",
                 "--tolerance", "max_error=0", "--out", tmp_path)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "would pass with max_error >=" in result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["verification"]["passed"] is False  # the artifacts stay for inspection, marked failed
    assert run("verify", tmp_path).exit_code == 1


def test_spec_that_does_not_match_the_onnx_is_a_user_error(cifar_export: Path,
                                                           run: Callable[..., Result]) -> None:
    result = run("verify", "--onnx", cifar_export / "model.onnx", "--spec", CIFAR, "--set", "input.size=64")
    assert result.exit_code == 2
    assert "the spec's model takes (N, 3, 64, 64)" in result.output


@pytest.mark.parametrize("args", [[], ["DIR", "--onnx", "x.onnx"], ["--onnx", "x.onnx"],
                                  ["DIR", "--tolerance", "max_error=1"]])
def test_verify_option_mistakes_are_user_errors(cifar_export: Path, run: Callable[..., Result],
                                                args: list[str]) -> None:
    result = run("verify", *[str(cifar_export) if a == "DIR" else a for a in args])
    assert result.exit_code == 2, result.output


def test_junit_report(cifar_export: Path, export_copy: Path, tmp_path: Path,
                      run: Callable[..., Result]) -> None:
    passed = tmp_path / "reports" / "pass.xml"
    assert run("verify", cifar_export, "--junit", passed).exit_code == 0
    suite = ET.parse(passed).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0"
    cases = {(case.get("classname"), case.get("name")): case for case in suite.iter("testcase")}
    assert ("integrity", "model.onnx") in cases and ("numeric.onnxruntime-cpu", "model.onnx batch=4") in cases
    assert int(suite.get("skipped", "0")) == sum(1 for _ in suite.iter("skipped"))
    if onnxruntime_unavailable("cuda"):  # one skipped case per (artifact, backend, batch), with the reason
        for batch in (1, 2, 4):
            skipped = cases[("numeric.onnxruntime-cuda", f"model.onnx batch={batch}")].find("skipped")
            assert skipped is not None and "CUDAExecutionProvider" in skipped.get("message", "")

    (export_copy / "spec.resolved.yaml").write_text("tampered")
    failed = tmp_path / "fail.xml"
    assert run("verify", export_copy, "--junit", failed).exit_code == 1
    suite = ET.parse(failed).getroot()
    assert suite.get("failures") == "2"  # the integrity check, and the verdict
    failure = next(suite.iter("failure"))
    assert failure.get("message", "").startswith("spec.resolved.yaml: changed: ")


def test_seeded_inputs_depend_on_seed_and_batch_only() -> None:
    a = seeded_input(0, 4, (3, 8, 8))
    np.testing.assert_array_equal(a, seeded_input(0, 4, (3, 8, 8)))
    assert a.dtype == np.float32 and a.shape == (4, 3, 8, 8)
    assert not np.array_equal(a[:2], seeded_input(0, 2, (3, 8, 8)))
    assert not np.array_equal(a, seeded_input(1, 4, (3, 8, 8)))


def test_an_onnx_checked_against_other_weights_says_each_thing_once(cifar_export: Path, run: Callable[..., Result]
                                                                    ) -> None:
    """Seeded weights instead of the export's: every weight differs; the list is cut with a count, and
    the report (stdout) and the error (stderr) do not repeat each other."""
    result = run("verify", "--onnx", cifar_export / "model.onnx", "--spec", CIFAR)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    differing = [line for line in lines if "weight differs from the spec+weights export" in line]
    assert len(differing) == 5 and len(set(differing)) == 5
    assert any(line.startswith("note       ... and ") and line.endswith("more weights differ") for line in lines)
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("error: verification failed:") and "weight differs" not in result.stderr


def test_an_onnx_of_another_spec_is_named_from_its_metadata(cifar_export: Path, cifar_weights: Path,
                                                            run: Callable[..., Result]) -> None:
    result = run("verify", "--onnx", cifar_export / "model.onnx", "--spec", CIFAR, "--set", "middle.repeat=2")
    assert result.exit_code == 1, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note")]
    assert notes[0].startswith("note       this file was exported from spec 'xception_cifar' (spec hash "), notes
    assert "check it against its own spec" in notes[0]


def test_a_backend_that_runs_no_onnx_selects_nothing(cifar_export: Path, run: Callable[..., Result]) -> None:
    result = run("verify", "--onnx", cifar_export / "model.onnx", "--spec", CIFAR, "--backend", "tensorrt")
    assert result.exit_code == 2 and "--backend tensorrt runs no ONNX file: nothing to verify" in result.output


def _export_and_check(model: torch.nn.Module, tmp_path: Path, name: str,
                      drift: str | None = None) -> VerificationResult:
    """Export ``model`` (optionally with one block's initializer off by 1 %) and check it on ONNX Runtime."""
    from exporters.contract import BatchProfile
    from exporters.onnx.blocks import read_blocks
    from exporters.onnx.export import export_onnx, serialize
    from exporters.runner import TorchRunner
    from exporters.verify.checks import Target, run_checks
    from exporters.verify.compare import DEFAULT_TOLERANCES

    proto = export_onnx(model, (3, 32, 32), profile=BatchProfile(1, 8, 16))
    if drift is not None:
        block = next(b for b in read_blocks(proto) if b.module == drift)
        weights = {i for n in proto.graph.node if n.name in block.nodes for i in n.input}
        tensor = next(t for t in proto.graph.initializer if t.name in weights and len(t.dims) == 4)
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.01), tensor.name))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(serialize(proto))
    return run_checks(TorchRunner(model, (3, 32, 32)), [Target(path, "onnx", "fp32")], batches=(1, 8, 16), seed=0,
                      tolerances=DEFAULT_TOLERANCES, backends=("onnxruntime-cpu",))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_verdicts_hold_at_any_output_scale(cifar_weights: Path, tmp_path: Path, scale: float) -> None:
    """The classifier scaled by 1e-3 ... 1e4: a correct export passes at every scale, and one weight
    tensor of one block off by 1 % fails at every scale."""
    from exporters.verify.reference import reference_model
    from xception_build import load_spec

    model = reference_model(load_spec(CIFAR), cifar_weights, 0)
    with torch.no_grad():
        model.head.fc.weight.mul_(scale)
        model.head.fc.bias.mul_(scale)
    correct = _export_and_check(model, tmp_path, "correct")
    assert correct.passed, correct.report()
    drifted = _export_and_check(model, tmp_path, "drifted", drift="middle.blocks.2")
    assert drifted.failed and not any(c.passed for c in drifted.comparisons), drifted.report()


def test_random_batchnorm_statistics_with_huge_logits_pass(tmp_path: Path) -> None:
    """Running variances far below 1 make the logits ~1e5: float error is ~0.1 in absolute terms, and
    PyTorch and ONNX Runtime still agree to float32 rounding of that scale."""
    from xception_build import build_model

    model = build_model(CIFAR, seed=3).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.normal_(0, 0.5, generator=generator)
            norm.running_var.uniform_(0.005, 0.05, generator=generator)
        logits = model(torch.randn(8, 3, 32, 32, generator=generator))
    assert logits.abs().max() > 1e3
    result = _export_and_check(model, tmp_path, "huge")
    assert result.passed, result.report()
    assert max(c.outputs[0].max_abs for c in result.comparisons) > 1e-4  # an absolute atol would have failed it


def test_a_drifted_block_is_named_by_verify_without_asking(export_copy: Path, run: Callable[..., Result]) -> None:
    """The numbers fail; the report says where: module, spec path, repeat and the spec line."""
    from exporters.manifest import describe, read_manifest, write_manifest

    drift_block(export_copy / "model.onnx", export_copy / "model.onnx", "middle.blocks.1")
    manifest = read_manifest(export_copy)  # as if the exporter itself had written the drifted file
    artifacts = [describe(export_copy, a.path, a.kind, a.precision) if a.path == "model.onnx" else a
                 for a in manifest.artifacts]
    write_manifest(export_copy, manifest.model_copy(update={"artifacts": artifacts}))
    result = run("verify", export_copy)
    assert result.exit_code == 1, result.output
    from xception_build import load_spec

    resolved = load_spec(export_copy / "spec.resolved.yaml")  # what verify rebuilds the reference from
    where = resolved.source.location_of(("middle", "blocks", 0)) if resolved.source else None
    assert where is not None
    assert f"first divergence: middle.blocks.1 = middle.blocks[0] (repeat 2/4), {where.file} line {where.line}" \
        in result.output
    rows = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines()
            if line.startswith(("middle.blocks.0 ", "middle.blocks.1 "))}
    assert rows == {"middle.blocks.0": "ok", "middle.blocks.1": "FAIL"}  # the curve: fine up to the drifted block


def test_explain_on_request_for_a_user_brought_onnx(cifar_export: Path, cifar_weights: Path, tmp_path: Path,
                                                    run: Callable[..., Result]) -> None:
    good = run("verify", "--onnx", cifar_export / "model.onnx", "--spec", CIFAR, "--weights", cifar_weights,
               "--explain", "--json")
    assert good.exit_code == 0, good.output
    explanation = json.loads(good.stdout)["explanations"][0]
    assert explanation["first_divergence"] is None and len(explanation["blocks"]) == 11  # 10 blocks and the head
    stripped = tmp_path / "no_map.onnx"
    proto = onnx.load(cifar_export / "model.onnx")
    kept = [p for p in proto.metadata_props if p.key != "xbuild.blocks"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, stripped)
    cannot = run("verify", "--onnx", stripped, "--spec", CIFAR, "--weights", cifar_weights, "--explain")
    assert cannot.exit_code == 0, cannot.output  # the verdict stands; the diagnosis says why it cannot be made
    assert "no_map.onnx: cannot explain: " in cannot.output and "only ONNX files exported by xbuild" in cannot.output


def test_an_unwritable_junit_path_is_refused_before_any_check(cifar_export: Path, tmp_path: Path,
                                                              run: Callable[..., Result]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run("verify", cifar_export, "--junit", blocker / "report.xml")
    assert result.exit_code == 2 and result.output.startswith("error: --junit ")  # nothing verified first
    assert "integrity" not in result.output
    folder = run("verify", cifar_export, "--junit", tmp_path)
    assert folder.exit_code == 2 and "is a folder, expected a file name" in folder.output
