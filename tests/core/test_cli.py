"""``xbuild compile`` and ``xbuild validate`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from spec_files import SPECS, line_of

from xception_build import build_model
from xception_build.cli import main
from xception_build.weights import load_weights, save_weights


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_compile_prints_the_block_table_with_totals() -> None:
    code, out, _ = run("compile", str(SPECS / "xception.yaml"))
    assert code == 0
    assert "22,855,952" in out and "8.36G" in out
    middle = line_of(SPECS / "xception.yaml", "{out: 728, reps: 3, shortcut: identity}")
    assert "middle.blocks.7" in out and f"middle.blocks[0] (xception.yaml:{middle}) 8/8" in out
    assert "2048x10x10" in out


def test_the_table_names_the_file_of_every_line_it_cites() -> None:
    """xception65.yaml extends xception41.yaml: its blocks are written in the parent file."""
    first = line_of(SPECS / "xception41.yaml", "{out: 128, reps: 3, stride: 2}")
    middle = line_of(SPECS / "xception41.yaml", "{out: 728, reps: 3, shortcut: identity}")
    code, out, _ = run("compile", str(SPECS / "xception65.yaml"))
    assert code == 0
    assert f"entry.blocks[0] (xception41.yaml:{first})" in out
    assert f"middle.blocks[0] (xception41.yaml:{middle}) 16/16" in out
    code, out, _ = run("compile", str(SPECS / "xception65.yaml"), "--json",
                       "--set", "entry.blocks[1]={out: 256, reps: 2, stride: 2}")
    rows = {row["module"]: row for row in json.loads(out)["blocks"]}
    assert (rows["entry.blocks.0"]["file"], rows["entry.blocks.0"]["line"]) == (str(SPECS / "xception41.yaml"), first)
    assert rows["entry.blocks.1"]["file"] == "--set entry.blocks[1]={out: 256, reps: 2, stride: 2}"
    assert rows["entry.blocks.1"]["line"] is None


def test_a_head_without_classes_is_not_shown_as_a_classifier() -> None:
    code, out, _ = run("compile", str(SPECS / "xception_cifar.yaml"), "--set", "head.num_classes=0")
    assert code == 0
    head = next(line for line in out.splitlines() if line.startswith("head "))
    assert head.split()[4:7] == ["avgpool", "1024", "0"], head
    code, out, _ = run("compile", str(SPECS / "xception_cifar.yaml"))
    assert "avgpool+linear" in out
    code, out, _ = run("compile", str(SPECS / "xception_cifar.yaml"), "--set", "head.pool=none",
                       "--set", "head.num_classes=0")
    head = next(line for line in out.splitlines() if line.startswith("head "))
    assert code == 0 and head.split()[4:6] == ["none", "1024x4x4"], head  # a feature map out: no pool, no fc


def test_compile_json_matches_the_plan() -> None:
    code, out, _ = run("compile", str(SPECS / "xception41.yaml"), "--json", "--set", "head.num_classes=10")
    assert code == 0
    data = json.loads(out)
    assert data["total_params"] == sum(row["params"] for row in data["blocks"])
    assert data["num_classes"] == 10 and data["blocks"][-1]["output_shape"] == [10]
    assert len(data["spec_hash"]) == 64


def test_compile_out_writes_a_resolved_spec_that_recompiles_the_same(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, _, err = run("compile", str(SPECS / "xception_cifar.yaml"), "--set", "middle.repeat=2",
                       "--seed", "7", "--out", str(out_dir))
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["spec.resolved.yaml", "summary.json",
                                                        "weights.safetensors"]
    summary = json.loads((out_dir / "summary.json").read_text())
    rebuilt = build_model(out_dir / "spec.resolved.yaml")
    load_weights(rebuilt, out_dir / "weights.safetensors")
    original = build_model(SPECS / "xception_cifar.yaml", overrides=["middle.repeat=2"], seed=7)
    assert rebuilt.plan.total_params == summary["total_params"]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), original.eval()(x))
    code, out, _ = run("compile", str(out_dir / "spec.resolved.yaml"), "--json")
    assert json.loads(out)["spec_hash"] == summary["spec_hash"]


def test_compile_imports_weights_first(tmp_path: Path) -> None:
    source = build_model(SPECS / "xception_cifar.yaml", seed=3)
    save_weights(source, tmp_path / "w.safetensors")
    code, _, err = run("compile", str(SPECS / "xception_cifar.yaml"), "--weights", str(tmp_path / "w.safetensors"),
                       "--out", str(tmp_path / "out"))
    assert code == 0 and "xception-build layout" in err
    rebuilt = build_model(SPECS / "xception_cifar.yaml")
    load_weights(rebuilt, tmp_path / "out" / "weights.safetensors")
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in source.state_dict().items())


def test_validate_reports_every_bad_spec_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((SPECS / "xception_cifar.yaml").read_text().replace("reps: 3", "reps: 0"))
    code, out, err = run("validate", str(SPECS / "xception.yaml"), str(bad), str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "ok: " in out and "22,855,952" in out
    assert f"{bad}:" in err and "middle.blocks[0].reps" in err
    assert "missing.yaml: file not found" in err
    assert "2 of 3 specs invalid" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("args,expected", [
    (["compile", "specs/xception.yaml", "--set", "middle.repeat=four"], "expected a whole number"),
    (["compile", "specs/xception.yaml", "--set", "middle.repaet=4"], "did you mean 'repeat'"),
    (["compile", "specs/xception.yaml", "--set", "input.size=4"], "too small"),
    (["compile", "specs/nope.yaml"], "file not found"),
    (["compile", "specs"], "is a directory"),
    (["compile", "specs/xception_cifar.yaml", "--weights", "specs/xception.yaml"], "not a weights file"),
])
def test_user_errors_exit_2_with_one_message(args: list[str], expected: str) -> None:
    root = Path(__file__).resolve().parents[2]
    args = [str(root / a) if a.startswith("specs") else a for a in args]
    code, out, err = run(*args)
    assert code == 2
    assert expected in err and err.startswith("error: ")
    assert "Traceback" not in err


def test_compile_out_into_an_unwritable_place_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run("compile", str(SPECS / "xception_cifar.yaml"), "--out", str(blocker / "sub"))
    assert code == 2 and f"--out {blocker / 'sub'}: cannot create a folder there: {blocker} is a file" in err
    assert blocker.read_text() == "x"
    code, _, err = run("compile", str(SPECS / "xception_cifar.yaml"), "--out", str(blocker))
    assert code == 2 and f"--out {blocker}: is a file, expected a folder" in err


@pytest.mark.parametrize("command", ["compile", "validate", "draw"])
def test_help_has_an_example(command: str) -> None:
    code, out, _ = run(command, "--help")
    assert code == 0 and "Example" in out and "xbuild " + command in out


def test_top_level_help_lists_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "Exit codes" in out and "compile" in out


def test_a_failed_compile_out_leaves_no_new_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import xception_build.weights

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xception_build.weights, "save_weights", disk_full)
    code, _, err = run("compile", str(SPECS / "xception_cifar.yaml"), "--out", str(tmp_path / "new" / "out"))
    assert code == 2 and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []
