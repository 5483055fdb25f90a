"""Shipped specs resolve by name (CLI, ``extends``, Python API), an existing path always wins,
and ``xbuild list`` shows them with their costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from spec_files import SPECS, line_of, shipped_specs

from xception_build import build_model, load_spec
from xception_build.cli import main
from xception_build.errors import SpecError

SHIPPED_NAMES = [path.stem for path in shipped_specs()]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder outside the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("reference", ["xception65", "xception65.yaml"])
def test_compile_by_name_from_any_folder(elsewhere: Path, reference: str) -> None:
    code, out, err = run("compile", reference)
    assert code == 0, err
    assert out.startswith(f"xception65 ({SPECS / 'xception65.yaml'}): input 3x299x299")
    assert "39,916,312" in out


def test_load_spec_and_build_model_take_names(elsewhere: Path) -> None:
    assert load_spec("xception").name == "xception"
    assert build_model("xception41").plan.total_params == 26_969_560


def test_an_existing_file_wins_over_the_shipped_name(elsewhere: Path) -> None:
    (elsewhere / "xception.yaml").write_text((SPECS / "xception_cifar.yaml").read_text()
                                             .replace("name: xception_cifar", "name: mine"))
    assert load_spec("xception.yaml").name == "mine"
    assert load_spec("xception").name == "xception"  # no file of that exact name here


def test_extends_a_shipped_spec_by_name(elsewhere: Path) -> None:
    (elsewhere / "variant.yaml").write_text("name: variant\nextends: xception41\nhead: {num_classes: 10}\n")
    code, out, err = run("compile", "variant.yaml")
    assert code == 0, err
    first = line_of(SPECS / "xception41.yaml", "{out: 128, reps: 3, stride: 2}")
    assert f"entry.blocks[0] (xception41.yaml:{first})" in out and "head (variant.yaml:3)" in out
    assert "26,969,560" not in out and "24,941,050" in out


def test_extends_prefers_a_file_beside_the_spec(elsewhere: Path) -> None:
    (elsewhere / "xception41.yaml").write_text((SPECS / "xception_cifar.yaml").read_text())
    (elsewhere / "variant.yaml").write_text("name: variant\nextends: xception41\n")
    assert load_spec(elsewhere / "variant.yaml").input.size == 299  # "xception41" (no suffix) is no file here
    (elsewhere / "variant.yaml").write_text("name: variant\nextends: xception41.yaml\n")
    assert load_spec(elsewhere / "variant.yaml").input.size == 32  # the sibling file wins


def test_an_unknown_name_suggests_and_lists_the_shipped_ones(elsewhere: Path) -> None:
    code, out, err = run("compile", "xceptoin65")
    assert code == 2 and out == ""
    first, hint = err.splitlines()
    assert first == "error: xceptoin65: file not found"
    assert hint.startswith("  hint: did you mean 'xception65'? ")
    assert hint.endswith(", ".join(SHIPPED_NAMES))


def test_an_unknown_name_in_extends_is_located_at_the_extends_line(elsewhere: Path) -> None:
    (elsewhere / "variant.yaml").write_text("name: variant\nextends: xception42\n")
    with pytest.raises(SpecError) as info:
        load_spec("variant.yaml")
    assert str(info.value).startswith("variant.yaml:2:1: extends: cannot extend 'xception42': file not found\n"
                                      "  hint: did you mean 'xception41'?")


def test_a_path_with_a_folder_is_never_taken_for_a_name(elsewhere: Path) -> None:
    code, _, err = run("compile", "specs/xception65.yaml")
    assert code == 2 and err.startswith("error: specs/xception65.yaml: file not found")


def test_list_shows_every_shipped_spec_with_its_costs() -> None:
    code, out, _ = run("list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["name", "input", "classes", "params", "GMACs", "description"]
    assert [row.split()[0] for row in rows] == SHIPPED_NAMES
    xception = rows[SHIPPED_NAMES.index("xception")].split()
    assert xception[1:5] == ["299x299", "1000", "22,855,952", "8.36"]


def test_list_json_and_a_pattern() -> None:
    code, out, _ = run("list", "xception6*", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["name"] for row in rows] == ["xception65", "xception65p"]
    assert rows[0]["params"] == 39_916_312 and rows[0]["input_size"] == [3, 299, 299]
    assert rows[0]["file"] == str(SPECS / "xception65.yaml")
    assert build_model(rows[0]["name"]).plan.total_macs == rows[0]["macs"]


def test_list_with_a_pattern_that_matches_nothing() -> None:
    code, out, err = run("list", "resnet*")
    assert code == 2 and out == ""
    assert err.startswith("error: no shipped spec matches 'resnet*'\n  hint: shipped specs: xception, ")
