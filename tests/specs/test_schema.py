"""``xbuild schema``: the JSON Schema that editors check specs against while they are typed.

Every shipped spec points at the schema shipped beside it and satisfies it; the shipped copy is
what ``xbuild schema`` prints now; and the schema rejects every structural error of the invalid
corpus (``tests/specs/invalid``). The corpus cases it cannot judge are listed below with the
reason, and each must indeed pass the schema, so neither list can drift from the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from spec_files import SPECS, shipped_specs

from xception_build.cli import main
from xception_build.errors import SpecError
from xception_build.source import parse_yaml

CORPUS = Path(__file__).resolve().parent / "invalid"
SHIPPED_SCHEMA = SPECS / "spec.schema.json"
MODELINE = "# yaml-language-server: $schema=spec.schema.json"

# Cases that are not YAML data at all: there is nothing for a schema to look at.
UNREADABLE = {
    "malformed_unclosed_list", "malformed_tab_indent", "malformed_two_documents", "empty", "duplicate_key",
    "python_tag", "python_tag_mapping", "recursive_alias", "merge_key", "mapping_as_key",
}
# Cases a JSON Schema cannot judge from the one file, with why: validation and planning catch them.
BEYOND_THE_SCHEMA = {
    "not_finite": "JSON has no NaN: comparisons with NaN are false, so bounds let it through",
    "non_positive_channels": "the channel count's bound is checked in planning, for lists and counts alike",
    "count_out_of_range": "the 2^24 limit is the planner's guard",
    "too_many_blocks": "repeat times block count: arithmetic across keys",
    "mean_per_channel": "one value per input channel: a relation between keys",
    "reps_without_count": "reps needed with a single out: a relation between keys",
    "reps_disagree_with_list": "reps against the length of out: a relation between keys",
    "layout_without_pw": "layout grammar (one dw, then one pw, per-slot limits)",
    "layout_pw_before_dw": "layout grammar",
    "layout_two_activations": "layout grammar",
    "conv_layout_without_conv": "layout grammar",
    "identity_shortcut_shape_change": "shapes are worked out by the planner",
    "spatial_size_zero": "shapes are worked out by the planner",
    "no_layers": "emptiness of all three flows together",
    "extends_missing_file": "about another file",
    "extends_cycle": "about other files",
    "extends_parent_empty": "about another file",
}
# The error is in the file a case extends: the schema judges that file.
IN_ANOTHER_FILE = {"extends_parent_invalid": CORPUS / "companions" / "parent_with_typo.yaml"}

CASES = sorted(path.stem for path in CORPUS.glob("*.yaml"))
STRUCTURAL = [name for name in CASES if name not in UNREADABLE | set(BEYOND_THE_SCHEMA)]


def xbuild_schema() -> dict[str, object]:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = xbuild_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def data_of(path: Path) -> object:
    """The file as the spec loader reads it (``extends`` still in place). The loader refuses a
    document that is no mapping before any schema could; the safe loader reads that one."""
    text = path.read_text(encoding="utf-8")
    try:
        return parse_yaml(text, str(path)).data
    except SpecError as exc:
        if not exc.message.startswith("a spec must be a mapping"):
            raise
        return yaml.safe_load(text)


def test_the_shipped_schema_is_what_xbuild_schema_prints() -> None:
    shipped = json.loads(SHIPPED_SCHEMA.read_text(encoding="utf-8"))
    assert shipped == xbuild_schema(), "regenerate it: xbuild schema > specs/spec.schema.json"


@pytest.mark.parametrize("spec", shipped_specs(), ids=lambda path: path.stem)
def test_every_shipped_spec_points_editors_at_the_schema(spec: Path) -> None:
    first_line = spec.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == MODELINE
    assert (spec.parent / first_line.split("$schema=")[1]).is_file()


@pytest.mark.parametrize("spec", shipped_specs(), ids=lambda path: path.stem)
def test_every_shipped_spec_satisfies_the_schema(spec: Path, validator: jsonschema.Draft202012Validator) -> None:
    errors = [error.message for error in validator.iter_errors(data_of(spec))]
    assert errors == []


def test_every_corpus_case_is_classified() -> None:
    assert set(CASES) >= UNREADABLE | set(BEYOND_THE_SCHEMA) | set(IN_ANOTHER_FILE)
    assert len(STRUCTURAL) >= 20


@pytest.mark.parametrize("case", STRUCTURAL)
def test_the_schema_rejects_each_structural_error(case: str, validator: jsonschema.Draft202012Validator) -> None:
    data = data_of(IN_ANOTHER_FILE.get(case, CORPUS / f"{case}.yaml"))
    assert not validator.is_valid(data), f"{case}: the schema accepts it"


@pytest.mark.parametrize("case", sorted(BEYOND_THE_SCHEMA))
def test_what_the_schema_cannot_judge_passes_it(case: str, validator: jsonschema.Draft202012Validator) -> None:
    """If the schema starts rejecting one of these, move it to the structural cases."""
    errors = [error.message for error in validator.iter_errors(data_of(CORPUS / f"{case}.yaml"))]
    assert errors == []


@pytest.mark.parametrize("entry,valid", [
    ({"out": 32, "stride": 2}, True),  # fits both kinds' fields: the position's default kind decides
    ({"kind": "xception", "out": 64, "reps": 2}, True),
    ({"kind": "conv", "out": 64, "reps": 2}, False),  # reps is no conv field
    ({"kind": "pool", "out": 64}, False),
    ({"out": 64, "kernel": 5}, True),
])
def test_stem_entries_default_to_conv(entry: dict[str, object], valid: bool,
                                      validator: jsonschema.Draft202012Validator) -> None:
    spec = {"name": "s", "entry": {"stem": [entry]}, "exit": {"blocks": [{"out": 8, "reps": 1}]}}
    assert validator.is_valid(spec) is valid


@pytest.mark.parametrize("entry,valid", [
    ({"out": 32, "stride": 2}, True),
    ({"out": 32, "kernel": 3}, False),  # kernel is a conv field, and blocks default to xception
    ({"kind": "conv", "out": 32, "kernel": 3}, True),
    ({"out": [32, "x"]}, False),
])
def test_block_entries_default_to_xception(entry: dict[str, object], valid: bool,
                                           validator: jsonschema.Draft202012Validator) -> None:
    spec = {"name": "s", "entry": {"blocks": [entry]}, "exit": {"blocks": [{"out": 8, "reps": 1}]}}
    assert validator.is_valid(spec) is valid


@pytest.mark.parametrize("data,valid", [
    ({"extends": "xception41", "middle": {"repeat": 4}}, True),  # a variant may be partial
    ({"name": "partial", "middle": {"repeat": 4}}, False),  # without extends, entry and exit are required
    ({"extends": "xception41", "middle": {"repaet": 4}}, False),
    ({"extends": "xception41", "input": {"size": [224]}}, False),
    ({"extends": "xception41", "input": {"size": [224, 192]}}, True),
])
def test_variants_that_extend_may_be_partial(data: dict[str, object], valid: bool,
                                             validator: jsonschema.Draft202012Validator) -> None:
    assert validator.is_valid(data) is valid


def test_schema_help_shows_the_editor_line() -> None:
    result = CliRunner().invoke(main, ["schema", "--help"])
    assert result.exit_code == 0 and MODELINE in result.stdout
