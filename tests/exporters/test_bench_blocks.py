"""``xbuild bench --blocks``: time per spec block, mapped to the spec, adding up to the measured total.

No speed is asserted: what is checked is that every planned block is a row where the plan says it
is written, with the plan's MACs, that the rows and the unattributed part add up to the measured
total within the stated fraction, and that what cannot be profiled says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result

from xception_build import load_spec, plan_spec
from xception_build.errors import BackendUnavailable, UserError

CIFAR = Path(__file__).resolve().parents[2] / "specs" / "xception_cifar.yaml"
FEW = ("--budget", "0", "--min-reps", "5", "--warmup", "1", "--no-progress")
STATED_FRACTION = 0.05  # docs/BENCHMARKS.md, "Time per block"


def planned_rows() -> list[tuple[str, str, list[int], str | None, int | None, int]]:
    """(module, spec path, repeat, file, line, MACs) of every planned block, then the head, from the plan."""
    spec = load_spec(CIFAR)
    plan = plan_spec(spec)
    head = spec.source.location_of(("head",)) if spec.source is not None else None
    return [*((b.module_name, b.spec_path, list(b.repeat), b.file, b.line, b.macs) for b in plan.blocks),
            ("head", "head", [1, 1], head.file if head else None, head.line if head else None, plan.head.macs)]


def profiles(run: Callable[..., Result], *args: str) -> list[dict[str, object]]:
    result = run("bench", CIFAR, "--blocks", "--json", *args, *FEW)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["sum_tolerance"] == STATED_FRACTION
    return list(data["blocks"])


def assert_adds_up(profile: dict[str, object]) -> None:
    """Every planned block once, as the plan places it, and blocks + unattributed = the measured total."""
    assert profile["status"] == "ok", profile["reason"]
    rows = profile["rows"]
    assert isinstance(rows, list)
    assert [(r["module"], r["spec_path"], r["repeat"], r["file"], r["line"], r["macs"]) for r in rows] == planned_rows()
    assert all(r["time_ms"] is not None and r["time_ms"] > 0 for r in rows), [r["module"] for r in rows]
    unattributed, check = profile["unattributed"], profile["check"]
    assert isinstance(unattributed, dict) and isinstance(check, dict)
    blocks = sum(r["time_ms"] for r in rows)
    loose = sum(k["time_ms"] for k in unattributed["kernels"]) + unattributed["overhead_ms"]
    total = check["total_ms"]
    assert abs(blocks + loose - total) <= STATED_FRACTION * total, (blocks, loose, total)
    assert check["within"] is True and check["blocks_ms"] == pytest.approx(blocks)
    assert unattributed["overhead"]  # says what the runtime's own part is
    assert sum(r["fraction_of_total"] for r in rows) == pytest.approx(blocks / total)
    for row in rows:  # achieved FLOP/s from the plan's MACs and the measured time
        assert row["achieved_flops"] == pytest.approx(2 * row["macs"] * profile["batch"] / (row["time_ms"] * 1e-3))
        assert row["fraction_of_peak"] is not None and row["fraction_of_peak"] > 0


def test_onnxruntime_fp32_and_int8_blocks_add_up_to_the_total(run: Callable[..., Result]) -> None:
    pytest.importorskip("onnxruntime")
    found = profiles(run, "--backend", "onnxruntime-cpu", "--precision", "fp32,int8", "--batch", "4")
    assert [(p["precision"], p["int8_activations"], p["batch"]) for p in found] == [
        ("fp32", None, 4), ("int8", "asymmetric", 4)]
    for profile in found:
        assert_adds_up(profile)
        # the block map covers the optimised graph, the int8 file's fused QLinearConvs included
        unattributed = profile["unattributed"]
        assert isinstance(unattributed, dict)
        assert sum(k["time_ms"] for k in unattributed["kernels"]) <= 0.01 * profile["check"]["total_ms"]
        kernels = [k for r in profile["rows"] for k in r["kernels"]]
        assert all(k["via"] in ("name", "neighbour") for k in kernels)
    int8_ops = {k["op_type"] for r in found[1]["rows"] for k in r["kernels"]}
    assert "QLinearConv" in int8_ops  # the quantized graph, not the float one, was profiled


def test_pytorch_blocks_add_up_and_unsupported_backends_say_so(run: Callable[..., Result]) -> None:
    found = profiles(run, "--backend", "pytorch-cpu,pytorch-compile-cpu", "--batch", "2")
    assert_adds_up(found[0])
    assert found[1]["status"] == "unsupported"
    assert "no per-block profile for pytorch-compile-cpu" in str(found[1]["reason"])

    table = run("bench", CIFAR, "--blocks", "--backend", "pytorch-cpu,tensorrt", "--batch", "2", *FEW)
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    for module, spec_path, repeat, file, line, _macs in planned_rows():
        row = next(text for text in lines if text[3:].startswith(module + " "))
        assert spec_path in row and f"{repeat[0]}/{repeat[1]}" in row
        assert file is not None and f"{Path(file).name}:{line}" in row
    assert sum(text.startswith("*") for text in lines) == 3  # the three slowest rows
    assert any(text.startswith("check: blocks + head + unattributed = ") and "within the stated 5%" in text
               for text in lines)
    assert "tensorrt fp32, batch 2: unsupported: no per-block profile for tensorrt" in table.output


def test_nothing_profilable_exits_3(run: Callable[..., Result]) -> None:
    result = run("bench", CIFAR, "--blocks", "--backend", "pytorch-compile-cpu,tensorrt", "--batch", "1", *FEW)
    assert result.exit_code == BackendUnavailable.exit_code, result.output
    assert result.output.startswith("error: none of the requested backends can be profiled per block here; ")
    assert "no per-block profile for pytorch-compile-cpu" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", "1,8"], "error: --blocks profiles one batch size, --batch gave 2 (1, 8)"),
    (["--train"], "error: --blocks and --train are separate runs"),
])
def test_blocks_user_errors_exit_2(run: Callable[..., Result], args: list[str], message: str) -> None:
    result = run("bench", CIFAR, "--blocks", "--backend", "pytorch-cpu", *args, "--no-progress")
    assert result.exit_code == UserError.exit_code and result.output.startswith(message), result.output


def test_the_tagged_copy_computes_what_the_file_computes(cifar_export: Path, tmp_path: Path) -> None:
    """The profile runs a copy whose names carry block tags; renaming must change no number."""
    ort = pytest.importorskip("onnxruntime")
    from exporters.onnx.blocks import HEAD, node_owners, read_blocks, tagged_copy
    from exporters.onnx.export import load_onnx, serialize

    proto = load_onnx(cifar_export / "model.onnx")
    modules = [b.module_name for b in plan_spec(load_spec(CIFAR)).blocks]
    copy = tagged_copy(proto, node_owners(proto, read_blocks(proto), modules[-1]), [*modules, HEAD])
    assert {n.name for n in copy.graph.node}.isdisjoint(n.name for n in proto.graph.node)  # every node tagged
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    outputs = []
    for name, graph in (("file", proto), ("copy", copy)):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(serialize(graph))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"input": x})[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_openvino_layers_are_given_to_the_planned_blocks(run: Callable[..., Result]) -> None:
    from exporters.openvino.ir import openvino_unavailable

    if openvino_unavailable() is not None:
        pytest.skip(str(openvino_unavailable()))
    found = profiles(run, "--backend", "openvino-cpu", "--precision", "fp32,int8", "--batch", "4")
    assert [(p["precision"], p["int8_activations"]) for p in found] == [("fp32", None), ("int8", "symmetric")]
    for profile in found:
        assert profile["status"] == "ok", profile["reason"]
        rows = profile["rows"]
        assert [(r["module"], r["spec_path"], r["repeat"], r["line"], r["macs"]) for r in rows] == \
            [(m, s, r, line, macs) for m, s, r, _f, line, macs in planned_rows()]
        assert all(r["time_ms"] is not None and r["time_ms"] > 0 for r in rows), [r["module"] for r in rows]
        # the layers OpenVINO executes, fused or made up, all reach a block: nothing left unattributed
        unattributed, check = profile["unattributed"], profile["check"]
        assert sum(k["time_ms"] for k in unattributed["kernels"]) <= 0.02 * check["total_ms"], unattributed
        # the layers' sum is checked against the wall clock itself (OpenVINO has no span of its own)
        assert unattributed["overhead_ms"] == 0 and check["blocks_ms"] == pytest.approx(sum(r["time_ms"] for r in rows))
    int8_layers = {k["op_type"] for r in found[1]["rows"] for k in r["kernels"]}
    assert "Convolution" in int8_layers and "FakeQuantize" in int8_layers  # the quantized IR was profiled
