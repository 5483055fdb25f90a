"""``xbuild diff A B``: settings, blocks added / removed / changed after defaults and extends,
and the parameter and MAC changes per flow and in total."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from spec_files import SPECS, line_of

from xception_build import load_spec, plan_spec
from xception_build.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def diff_json(*args: str) -> dict[str, object]:
    code, out, err = run("diff", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def costs(data: dict[str, object]) -> dict[str, dict[str, int]]:
    return {row["part"]: row for row in data["costs"]}  # type: ignore[attr-defined]


def test_a_deeper_middle_flow() -> None:
    data = diff_json("xception41", "xception65")
    settings = {row["field"]: (row["before"], row["after"]) for row in data["settings"]}
    assert settings["middle.repeat"] == (8, 16) and settings["name"] == ("xception41", "xception65")
    assert data["entries"] == []  # the same blocks, repeated more often
    rows = costs(data)
    assert rows["middle"]["params_delta"] == 12_946_752 and rows["entry"]["params_delta"] == 0
    assert rows["total"]["params_a"] == 26_969_560 and rows["total"]["params_b"] == 39_916_312
    assert rows["total"]["macs_delta"] == rows["middle"]["macs_delta"] > 0
    assert data["file_a"] == str(SPECS / "xception41.yaml") and data["file_b"] == str(SPECS / "xception65.yaml")


def test_the_table_shows_settings_blocks_and_costs() -> None:
    code, out, _ = run("diff", str(SPECS / "xception41.yaml"), "xception65")
    assert code == 0
    assert out.splitlines()[0] == (f"xception41 ({SPECS / 'xception41.yaml'}) -> "
                                   f"xception65 ({SPECS / 'xception65.yaml'})")
    assert any(line.split() == ["middle.repeat", "8", "->", "16"] for line in out.splitlines())
    assert "blocks (after defaults and extends)\n  (the same)" in out
    total = out.splitlines()[-1].split()
    assert total == ["total", "26,969,560", "39,916,312", "+12,946,752", "9.20G", "13.85G", "+4.65G"]


def test_a_changed_default_shows_in_every_block_that_inherits_it() -> None:
    """--set applies to B: a spec against itself shows what an override does."""
    data = diff_json("xception41", "xception41", "--set", "defaults.layout=[act,dw,pw,norm]")
    assert [(row["field"], row["after"]) for row in data["settings"]] == [
        ("defaults.layout", ["act", "dw", "pw", "norm"])]
    changed = data["entries"]
    assert [row["a"]["spec_path"] for row in changed] == [
        "entry.blocks[0]", "entry.blocks[1]", "entry.blocks[2]", "middle.blocks[0]", "exit.blocks[0]"]
    assert all(row["status"] == "changed" for row in changed)
    first = changed[0]
    assert first["fields"] == [{"field": "layout", "before": ["act", "dw", "norm", "pw", "norm"],
                                "after": ["act", "dw", "pw", "norm"]}]
    assert first["a"]["line"] == line_of(SPECS / "xception41.yaml", "{out: 128, reps: 3, stride: 2}")
    assert first["b"]["params"] < first["a"]["params"]  # one BatchNorm fewer per separable conv
    # exit.blocks[1] writes its own layout: the default does not reach it
    assert "exit.blocks[1]" not in {row["a"]["spec_path"] for row in changed}
    spec = plan_spec(load_spec("xception41", ["defaults.layout=[act,dw,pw,norm]"]))
    assert costs(data)["total"]["params_b"] == spec.total_params


def test_an_inserted_block_is_one_block_added(tmp_path: Path) -> None:
    base = load_spec("xception_cifar")
    blocks = [entry.model_dump(exclude_none=True) for entry in base.entry.blocks]
    blocks.insert(1, {"out": 128, "reps": 2})
    variant = tmp_path / "variant.yaml"
    variant.write_text("name: variant\nextends: xception_cifar\nentry:\n  blocks:\n"
                       + "".join(f"    - {json.dumps(block)}\n" for block in blocks))
    data = diff_json("xception_cifar", str(variant))
    (added,) = data["entries"]
    assert added["status"] == "added" and added["a"] is None
    assert added["b"]["spec_path"] == "entry.blocks[1]"
    assert (added["b"]["file"], added["b"]["line"]) == (str(variant), 6)
    assert {"field": "out", "before": None, "after": 128} in added["fields"]
    assert {"field": "layout", "before": None, "after": ["act", "dw", "pw", "norm"]} in added["fields"]
    assert costs(data)["entry"]["params_delta"] == added["b"]["params"] > 0
    (removed,) = diff_json(str(variant), "xception_cifar")["entries"]
    assert removed["status"] == "removed" and removed["a"]["spec_path"] == "entry.blocks[1]"
    code, out, _ = run("diff", "xception_cifar", str(variant))
    assert "  added    entry.blocks[1]  (variant.yaml:6)" in out


def test_a_spec_against_itself_is_the_same() -> None:
    code, out, _ = run("diff", "xception", str(SPECS / "xception.yaml"))
    assert code == 0
    assert "settings\n  (the same)" in out and "blocks (after defaults and extends)\n  (the same)" in out
    assert out.splitlines()[-1].split()[3] == "0"


@pytest.mark.parametrize("args,expected", [
    (["xception41", "xceptoin65"], "error: xceptoin65: file not found\n  hint: did you mean 'xception65'?"),
    (["xception41", "xception65", "--set", "middle.repeat=0"],
     "error: --set middle.repeat=0: middle.repeat: expected a value greater than 0, got 0"),
    (["xception41"], "error: Missing argument 'B'."),
])
def test_bad_input_is_one_clean_error(args: list[str], expected: str) -> None:
    code, out, err = run("diff", *args)
    assert code == 2 and out == ""
    assert err.startswith(expected), err


def test_help_has_examples() -> None:
    code, out, _ = run("diff", "--help")
    assert code == 0 and "Examples:" in out and "xbuild diff xception41 xception65" in out
