"""Every user error in a spec ends as one ``SpecError`` naming file, line, column and spec path.

The corpus in ``tests/specs/invalid/`` holds one small spec per kind of error. Each starts with
comment lines saying what loading and planning it must report::

    # expect: unknown key 'strde'        (a substring of the message)
    # hint: did you mean 'stride'?       (optional: a substring of the hint)
    # at: 10:27                          (line:column in this file, or FILE:line:column)
    # path: entry.blocks[1].strde        (the spec path, or "(none)")

``companions/`` holds the files some cases extend. The rest of this module covers what a
corpus file cannot hold: missing, unreadable and binary files, ``--set`` overrides, and the
error format as the CLI prints it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from xception_build.cli import main
from xception_build.errors import Location, SpecError
from xception_build.plan import plan_spec
from xception_build.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
CIFAR = SPECS / "xception_cifar.yaml"
CORPUS = Path(__file__).resolve().parent / "invalid"


# -- the corpus -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    file: Path
    expect: str
    hint: str | None
    location: Location
    spec_path: str | None


def _read_case(file: Path) -> Case:
    header: dict[str, str] = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"# (expect|hint|at|path): (.*)$", line)
        if match:
            header[match.group(1)] = match.group(2)
    missing = {"expect", "at", "path"} - set(header)
    assert not missing, f"{file.name}: header lacks {sorted(missing)}"
    where, line_text, column_text = header["at"].rsplit(":", 2) if header["at"].count(":") == 2 \
        else (file.name, *header["at"].split(":"))
    location = Location(str(file.parent / where), int(line_text), int(column_text))
    spec_path = None if header["path"] == "(none)" else header["path"]
    return Case(file, header["expect"], header.get("hint"), location, spec_path)


CASES = [_read_case(file) for file in sorted(CORPUS.glob("*.yaml"))]

# One corpus file per kind of spec error users meet; deleting one fails here.
REQUIRED_KINDS = {
    "malformed_unclosed_list", "malformed_tab_indent", "malformed_two_documents", "empty", "not_a_mapping",
    "duplicate_key", "python_tag", "python_tag_mapping", "recursive_alias", "merge_key", "mapping_as_key",
    "unknown_key", "unknown_top_level_key", "unknown_block_kind", "unknown_kind_in_stem", "invalid_choice",
    "wrong_type_int", "wrong_type_bool", "wrong_type_float_in_channel_list", "wrong_type_union",
    "wrong_type_section", "missing_required_key", "missing_block_channels", "non_positive_repeat",
    "non_positive_reps", "non_positive_channels", "non_positive_input_size", "out_of_range", "not_finite",
    "too_many_blocks", "mean_per_channel", "layout_without_pw", "layout_pw_before_dw",
    "layout_two_activations", "conv_layout_without_conv", "reps_without_count", "reps_disagree_with_list",
    "identity_shortcut_shape_change", "spatial_size_zero", "no_layers", "stem_outside_entry",
    "extends_missing_file", "extends_not_a_path", "extends_cycle", "extends_parent_invalid",
    "extends_parent_empty", "unknown_key_not_a_name", "count_out_of_range", "input_size_one_value",
}


def _load_and_plan(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> SpecError:
    with pytest.raises(SpecError) as info:
        plan_spec(load_spec(path, overrides))
    return info.value


def assert_one_clean_message(err: SpecError) -> None:
    """``LOCATION: [SPEC.PATH: ]message`` on one line, then only indented hint lines."""
    text = str(err)
    assert err.location is not None, text
    assert text.startswith(f"{err.location}: "), text
    if err.spec_path:
        assert text.startswith(f"{err.location}: {err.spec_path}: "), text
    first, *rest = text.split("\n")
    assert first.strip() and all(line.startswith("  ") for line in rest), text
    assert "Traceback" not in text and "pydantic" not in text and "Input should" not in text, text


def test_corpus_has_one_case_per_kind_of_error() -> None:
    assert {case.file.stem for case in CASES} >= REQUIRED_KINDS


@pytest.mark.parametrize("case", CASES, ids=[case.file.stem for case in CASES])
def test_invalid_spec_is_reported_at_its_place(case: Case) -> None:
    err = _load_and_plan(case.file)
    assert err.problems == (err,), str(err)  # each case holds one mistake, and is reported once
    assert err.location == case.location
    assert err.spec_path == case.spec_path
    assert case.expect in err.message
    if case.hint is not None:
        assert err.hint is not None and case.hint in err.hint
    assert_one_clean_message(err)


@pytest.mark.parametrize("case", CASES, ids=[case.file.stem for case in CASES])
def test_cli_prints_one_error_and_exits_2(case: Case) -> None:
    result = CliRunner().invoke(main, ["compile", str(case.file)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    expected_prefix = f"error: {case.location}: " + (f"{case.spec_path}: " if case.spec_path else "")
    assert result.stderr.startswith(expected_prefix), result.stderr
    assert result.stderr.count("error: ") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


# -- several problems in one spec ----------------------------------------------------------

SEVERAL = """\
name: several
input: {size: 224, chanels: 3}
defaults: {activation: rleu}
entry:
  blocks:
    - {out: 64, reps: 2, strde: 2}
    - {out: [64, x, y], reps: 2}
    - {out: true, reps: 2}
middle:
  repeat: 0
exit: {blocks: [{out: 128, reps: two}]}
head: {pool: average}
"""
# (line:column, spec path, message) of each problem in SEVERAL, in file order
SEVERAL_PROBLEMS = [
    ("2:20", "input.chanels", "unknown key 'chanels'"),
    ("3:12", "defaults.activation", "'rleu' is not a valid choice"),
    ("6:26", "entry.blocks[0].strde", "unknown key 'strde'"),
    ("7:18", "entry.blocks[1].out[1]", "expected a whole number, got 'x'"),
    ("7:21", "entry.blocks[1].out[2]", "expected a whole number, got 'y'"),
    ("8:8", "entry.blocks[2].out", "expected a whole number or a list, got true"),
    ("10:3", "middle.repeat", "expected a value greater than 0, got 0"),
    ("11:28", "exit.blocks[0].reps", "expected a whole number, got 'two'"),
    ("12:8", "head.pool", "'average' is not a valid choice"),
]


def test_every_problem_of_a_spec_is_reported_at_its_place(tmp_path: Path) -> None:
    spec = tmp_path / "several.yaml"
    spec.write_text(SEVERAL)
    err = _load_and_plan(spec)
    found = [(f"{p.location.line}:{p.location.column}" if p.location else None, p.spec_path, p.message)
             for p in err.problems]
    assert found == SEVERAL_PROBLEMS
    for problem in err.problems:
        assert isinstance(problem, SpecError) and problem.location is not None
        assert problem.location.file == str(spec)
        assert_one_clean_message(problem)
    assert (err.location, err.spec_path, err.message) == (Location(str(spec), 2, 20), "input.chanels",
                                                           "unknown key 'chanels'")


def test_the_cli_prints_each_problem_as_its_own_error(tmp_path: Path) -> None:
    spec = tmp_path / "several.yaml"
    spec.write_text(SEVERAL)
    for command in ("compile", "validate"):
        result = CliRunner().invoke(main, [command, str(spec), "--set", "head.dropout=2"])
        assert result.exit_code == 2 and result.stdout == ""
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        expected = [f"error: {spec}:{at}: {path}: {message}" for at, path, message in SEVERAL_PROBLEMS]
        expected.append("error: --set head.dropout=2: head.dropout: expected a value less than 1.0, got 2")
        if command == "validate":
            expected.append("error: 1 of 1 spec invalid")
        assert errors == expected
        hints = [line for line in result.stderr.splitlines() if not line.startswith("error: ")]
        assert hints[0] == "  hint: did you mean 'channels'? valid keys: channels, crop_pct, interpolation, " \
                           "mean, size, std"
        assert all(line.startswith("  hint: ") for line in hints), result.stderr


def test_missing_keys_of_one_mapping_are_one_problem(tmp_path: Path) -> None:
    spec = tmp_path / "bare.yaml"
    spec.write_text("description: nothing else\n")
    err = _load_and_plan(spec)
    assert str(err) == f"{spec}:1:1: missing required keys 'name', 'entry' and 'exit' in the spec"


def test_a_spec_with_very_many_problems_lists_the_first_fifty(tmp_path: Path) -> None:
    spec = tmp_path / "many.yaml"
    blocks = "\n".join(f"    - {{out: 8, reps: {i + 1}, strde{i}: 2}}" for i in range(60))
    spec.write_text(f"name: many\nentry:\n  blocks:\n{blocks}\nexit: {{blocks: [{{out: 8, reps: 1}}]}}\n")
    err = _load_and_plan(spec)
    assert [p.spec_path for p in err.problems] == [f"entry.blocks[{i}].strde{i}" for i in range(50)]
    assert str(err).endswith("\n  (10 more problems in this spec, not shown)")
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.stderr.count("error: ") == 51  # 50 problems and the closing count of invalid specs
    assert "  (10 more problems in this spec, not shown)\nerror: 1 of 1 spec invalid" in result.stderr


def test_channel_and_reps_mistakes_of_several_blocks_come_in_one_report(tmp_path: Path) -> None:
    spec = tmp_path / "blocks.yaml"
    spec.write_text("name: blocks\nentry:\n  blocks:\n"
                    "    - {out: [64, 64], reps: 3}\n"
                    "    - {out: []}\n"
                    "    - {out: 128}\n"
                    "exit: {blocks: [{out: 0, reps: 2}]}\n")
    err = _load_and_plan(spec)
    found = [(f"{p.location.line}:{p.location.column}" if p.location else None, p.spec_path, p.message)
             for p in err.problems]
    assert found == [("4:23", "entry.blocks[0].reps", "reps is 3 but 'out' lists 2 channel counts"),
                     ("5:8", "entry.blocks[1].out", "'out' lists no channels"),
                     ("6:7", "entry.blocks[2].reps", "reps is required when out is a single channel count"),
                     ("7:18", "exit.blocks[0].out", "channel count must be positive, got 0")]
    assert err.problems[0].hint and "drop reps" in err.problems[0].hint


def test_checks_across_keys_follow_once_the_keys_are_valid(tmp_path: Path) -> None:
    """A mapping's own checks (size, mean per channel) need its keys valid first; planning (shapes)
    needs the whole spec valid: fixing the first round of problems shows the next."""
    spec = tmp_path / "rounds.yaml"
    spec.write_text("name: rounds\ninput: {size: [32], chanels: 3}\n"
                    "entry: {blocks: [{out: 8, reps: 1, shortcut: identity, stride: 2}]}\n"
                    "exit: {blocks: [{out: 8, reps: 1}]}\n")
    assert _load_and_plan(spec).spec_path == "input.chanels"
    spec.write_text(spec.read_text().replace(", chanels: 3", ""))
    assert _load_and_plan(spec).spec_path == "input.size"
    spec.write_text(spec.read_text().replace("[32]", "[32, 32]"))
    assert _load_and_plan(spec).spec_path == "entry.blocks[0].shortcut"


# -- files that cannot be specs -------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    err = _load_and_plan(tmp_path / "nope.yaml")
    assert err.location == Location(str(tmp_path / "nope.yaml")) and err.message == "file not found"
    assert err.hint and "the name of a shipped spec" in err.hint and "xception41" in err.hint
    assert str(err).startswith(f"{tmp_path / 'nope.yaml'}: file not found")


def test_directory_given_as_a_file() -> None:
    err = _load_and_plan(SPECS)
    assert err.location == Location(str(SPECS))
    assert err.message == "is a directory, expected a YAML spec file"


def test_unreadable_file(tmp_path: Path) -> None:
    spec = tmp_path / "locked.yaml"
    spec.write_text(CIFAR.read_text())
    spec.chmod(0)
    try:
        if os.access(spec, os.R_OK):
            pytest.skip("this user can read a mode-000 file (root): permissions cannot be tested")
        err = _load_and_plan(spec)
    finally:
        spec.chmod(0o644)
    assert err.location == Location(str(spec))
    assert err.message == "cannot read the file: permission denied"


def test_non_utf8_file_names_the_first_bad_byte(tmp_path: Path) -> None:
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("name: caf\u00e9\nentry: {}\n".encode("latin-1"))
    err = _load_and_plan(spec)
    assert err.location == Location(str(spec), 1, 10)
    assert err.message == "the file is not UTF-8 text (byte 0xe9); expected a YAML spec"


def test_binary_file(tmp_path: Path) -> None:
    spec = tmp_path / "weights.yaml"
    spec.write_bytes(bytes(range(256)))
    err = _load_and_plan(spec)
    assert "not UTF-8 text" in err.message
    assert_one_clean_message(err)


def test_empty_file(tmp_path: Path) -> None:
    spec = tmp_path / "empty.yaml"
    spec.write_bytes(b"")
    err = _load_and_plan(spec)
    assert err.location == Location(str(spec), 1, 1)
    assert err.message.startswith("the spec is empty")


def test_control_character_in_the_text(tmp_path: Path) -> None:
    spec = tmp_path / "nul.yaml"
    spec.write_text("name: a\nentry: b\x00c\n")
    err = _load_and_plan(spec)
    assert err.location == Location(str(spec), 2, 9)
    assert err.message == "malformed YAML: character #x0000 is not allowed in YAML text"


def test_nesting_too_deep_is_an_error_not_a_crash(tmp_path: Path) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    err = _load_and_plan(spec)
    assert "nested too deeply" in err.message
    assert_one_clean_message(err)


def test_alias_expansion_is_bounded(tmp_path: Path) -> None:
    """A "billion laughs" document: nine levels of ten aliases each."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    spec = tmp_path / "laughs.yaml"
    spec.write_text("\n".join(lines) + "\n")
    err = _load_and_plan(spec)
    assert "expands to more than 100,000 values" in err.message
    assert err.location is not None and err.location.line is not None


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    spec = tmp_path / "huge.yaml"
    spec.write_bytes(b"# padding\n" * 500_000)
    err = _load_and_plan(spec)
    assert str(err) == f"{spec}: the file is larger than 4 MiB; expected a YAML spec"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_an_endless_device_is_refused() -> None:
    err = _load_and_plan("/dev/zero")
    assert err.message == "the file is larger than 4 MiB; expected a YAML spec"


def test_a_symlink_loop_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    err = _load_and_plan(tmp_path / "a.yaml")
    assert str(err).startswith(f"{tmp_path / 'a.yaml'}: file not found")


@pytest.mark.parametrize("reference,shown", [("a\\x00b", "a\\x00b"), ("a\\nb", "a\\nb"),
                                             ("x" * 300, "x" * 77 + "...")])
def test_an_odd_extends_path_is_shown_on_one_line(tmp_path: Path, reference: str, shown: str) -> None:
    spec = tmp_path / "child.yaml"
    spec.write_text(f'name: child\nextends: "{reference}"\n')
    err = _load_and_plan(spec)
    assert err.location == Location(str(spec), 2, 1) and err.spec_path == "extends"
    assert err.message.startswith(f"cannot extend '{shown}': ")
    assert_one_clean_message(err)


def test_extends_a_directory(tmp_path: Path) -> None:
    (tmp_path / "parent").mkdir()
    spec = tmp_path / "child.yaml"
    spec.write_text("name: child\nextends: parent\n")
    err = _load_and_plan(spec)
    assert err.location == Location(str(spec), 2, 1) and err.spec_path == "extends"
    assert err.message == "cannot extend 'parent': is a directory, expected a YAML spec file"


def test_a_spec_extending_itself(tmp_path: Path) -> None:
    spec = tmp_path / "self.yaml"
    spec.write_text("# a loop of one\nextends: self.yaml\nname: loop\n")
    err = _load_and_plan(spec)
    assert err.location == Location(str(spec), 2, 1) and err.spec_path == "extends"
    assert "'extends' cycle" in err.message and err.hint and "may not extend itself" in err.hint


# -- YAML values: the safe loader, tags, YAML 1.2 floats ------------------------------------

@pytest.mark.parametrize("text,message", [
    ("name: !!python/name:os.system x\n", "unsupported YAML tag '!!python/name:os.system'"),
    ("name: !!python/object/new:os.system [echo]\n", "unsupported YAML tag '!!python/object/new:os.system'"),
    ("name: !custom x\n", "unsupported YAML tag '!custom'"),
    ("name: !!set {a, b}\n", "unsupported YAML tag '!!set'"),
    ("name: !!int abc\n", "cannot read 'abc' as !!int"),
    ("name: !!bool maybe\n", "cannot read 'maybe' as !!bool"),
    ("name: !!timestamp soon\n", "cannot read 'soon' as !!timestamp"),
])
def test_tags_are_refused_cleanly(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "tagged.yaml"
    spec.write_text(text)
    err = _load_and_plan(spec)
    assert err.message == message
    assert err.location == Location(str(spec), 1, 7) and err.spec_path == "name"


def test_python_tags_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"name: !!python/object/apply:pathlib.Path.touch [{str(marker)!r}]\n")
    _load_and_plan(spec)
    assert not marker.exists()


@pytest.mark.parametrize("written,value", [("1e-3", 1e-3), ("1.0e-5", 1e-5), ("2E-4", 2e-4), ("+5e-1", 0.5)])
def test_exponent_floats_are_numbers(tmp_path: Path, written: str, value: float) -> None:
    """PyYAML (YAML 1.1) reads ``1e-3`` as text; specs read it as the number it looks like."""
    spec = tmp_path / "eps.yaml"
    defaults = "  activation: relu\n"
    text = CIFAR.read_text().replace(defaults, f"{defaults}  norm: {{eps: {written}}}\n")
    spec.write_text(text)
    assert load_spec(spec).defaults.norm.eps == value
    assert load_spec(CIFAR, [f"defaults.norm.eps={written}"]).defaults.norm.eps == value


# -- --set PATH=VALUE ------------------------------------------------------------------------

@pytest.mark.parametrize("override,spec_path,message", [
    ("middle.repeat", None, "bad --set 'middle.repeat': expected PATH=VALUE"),
    ("=4", None, "bad --set path ''"),
    ("entry..stride=2", None, "bad --set path 'entry..stride'"),
    ("entry.blocks[x].stride=2", None, "bad --set path 'entry.blocks[x].stride'"),
    ("entry.blocks[-1].stride=2", None, "bad --set path 'entry.blocks[-1].stride'"),
    ("head.num_classes=[1", None, "bad --set value '[1': not a YAML value"),
    ("head.num_classes=!!python/name:os.system x", None,
     "bad --set value '!!python/name:os.system x': unsupported YAML tag '!!python/name:os.system'"),
    ("entry.blocks[9].stride=2", "entry.blocks[9]", "no list item [9] here (the list has 2)"),
    ("entry.blocks[2]={out: 8, reps: 1}", "entry.blocks[2]", "no list item [2] to set (the list has 2)"),
    ("name[0]=x", "name[0]", "cannot set item [0]: name is not a list"),
    ("name.first=x", "name.first", "cannot set 'first': name is not a mapping"),
    ("name.first.second=x", "name.first", "'first' cannot be set: name is not a mapping"),
    ("head[0].x=1", "head[0]", "cannot take item [0]: head is not a list"),
    ("middle.repaet=4", "middle.repaet", "unknown key 'repaet'"),
    ("entry.blocks[0].foo.bar=1", "entry.blocks[0].foo", "unknown key 'foo'"),
    ("middle.repeat=four", "middle.repeat", "expected a whole number, got 'four'"),
    ("middle.repeat=0", "middle.repeat", "expected a value greater than 0, got 0"),
    ("middle.repeat=", "middle.repeat", "expected a whole number, got null"),
    ("entry.blocks[0].kind=xcepton", "entry.blocks[0].kind", "unknown block kind 'xcepton'"),
    ("entry.blocks[0].out=[64, x]", "entry.blocks[0].out[1]", "expected a whole number, got 'x'"),
    ("entry.blocks[0].shortcut=identity", "entry.blocks[0].shortcut", "needs the same shape in and out"),
    ("scaling.width=.inf", "scaling.width", "expected a finite number, got inf"),
    ("scaling.width=1e300", "scaling.width", "width 1e+300 times 32 channels is out of range"),
    ("entry.blocks[1].reps=1180591620717411303424", "entry.blocks[1].reps",
     "reps 1,180,591,620,717,411,303,424 is out of range: at most 1,000"),
    ("head.num_classes=99999999999", "head.num_classes", "num_classes 99,999,999,999 is out of range"),
    ("scaling.depth=1e300", "scaling.depth", "would make more than 1,000 blocks in the middle flow"),
    ("middle.stem=[{out: 8}]", "middle.stem", "only the entry flow has a stem"),
    ("input.size=[32, 0]", "input.size", "size must be a positive side or [height, width], got [32, 0]"),
])
def test_bad_set_is_located_at_the_override(override: str, spec_path: str | None, message: str) -> None:
    err = _load_and_plan(CIFAR, [override])
    assert err.location == Location(f"--set {override}")
    assert err.spec_path == spec_path
    assert message in err.message
    assert_one_clean_message(err)


def test_bad_set_unknown_key_suggests_and_lists_valid_keys() -> None:
    err = _load_and_plan(CIFAR, ["middle.repaet=4"])
    assert err.hint is not None
    assert err.hint.startswith("did you mean 'repeat'? valid keys: blocks, defaults, final_act, repeat, stem")


def test_the_failing_override_is_named_among_several() -> None:
    err = _load_and_plan(CIFAR, ["head.num_classes=10", "middle.repeat=-2", "head.dropout=0.5"])
    assert str(err) == "--set middle.repeat=-2: middle.repeat: expected a value greater than 0, got -2"


def test_spatial_size_reaching_zero_points_at_the_layer() -> None:
    """xception.yaml's unpadded stem turns 6 into 2, then into 0 (7 still gives 1x1 features;
    the max-pool blocks never reach zero: they round up)."""
    err = _load_and_plan(SPECS / "xception.yaml", ["input.size=6"])
    assert err.location is not None and err.location.file == str(SPECS / "xception.yaml")
    assert err.spec_path == "entry.stem[1].kernel"
    assert err.message == ("the input (32x2x2) is too small for kernel 3, stride 1, padding 0: "
                           "the output would be 0x0")
    assert plan_spec(load_spec(SPECS / "xception.yaml", ["input.size=7"])).feature_shape.height == 1


def test_a_value_set_over_the_file_is_located_at_the_override() -> None:
    """The file's position no longer applies once --set replaced the value."""
    err = _load_and_plan(CIFAR, ["middle.blocks[0]={out: 256, reps: 0}"])
    assert err.location == Location("--set middle.blocks[0]={out: 256, reps: 0}")
    assert err.spec_path == "middle.blocks[0].reps"


def test_a_file_error_under_an_override_stays_in_the_file(tmp_path: Path) -> None:
    spec = tmp_path / "typo.yaml"
    spec.write_text(CIFAR.read_text().replace("dropout: 0.2", "dropuot: 0.2"))
    err = _load_and_plan(spec, ["head.num_classes=5"])
    assert err.location is not None and err.location.file == str(spec) and err.spec_path == "head.dropuot"
    assert err.hint is not None and err.hint.startswith("did you mean 'dropout'?")


def test_permission_denied_even_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same error path as ``test_unreadable_file``, reachable where that one is skipped."""
    spec = tmp_path / "locked.yaml"
    spec.write_text(CIFAR.read_text())

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    err = _load_and_plan(spec)
    assert str(err) == f"{spec}: cannot read the file: permission denied"


@pytest.mark.parametrize("written", ["=", "<<"])
def test_yaml_11_oddities_are_plain_text(written: str) -> None:
    """PyYAML gives a plain ``=`` and ``<<`` tags the safe loader cannot build; they are text."""
    assert load_spec(CIFAR, [f"name={written}"]).name == written
