"""``xbuild diff A B``: what changed between two variants, block by block, and what it costs.

Both specs are compared as the network sees them: after ``extends``, ``--set`` and the defaults
cascade. A block that inherits ``layout`` from ``defaults`` shows the layout it gets, so editing
``defaults`` shows up in every block it reaches. Blocks are paired flow by flow with a sequence
alignment (``difflib``), so inserting one block reads as one block added, not as every later
block changed. Parameters and MACs come from the two plans: per flow, the head and in total.
No torch is needed.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .blocks import BlockSpecModel, kind_of
from .options import ResolvedOptions, resolve_options
from .plan import Plan, plan_spec
from .source import format_path
from .spec import FLOWS, Spec, resolved_data
from .tables import cite, human_count, render_table


@dataclass(frozen=True)
class FieldChange:
    field: str  # dotted, as in a spec: "layout", "norm.eps", "middle.repeat"
    before: Any  # None: not set on that side
    after: Any


@dataclass(frozen=True)
class Cited:
    """A spec entry on one side: its path, where it was written, its costs (all its copies)."""

    spec_path: str
    file: str | None
    line: int | None
    params: int
    macs: int


@dataclass(frozen=True)
class EntryChange:
    status: Literal["added", "removed", "changed"]
    a: Cited | None
    b: Cited | None
    fields: tuple[FieldChange, ...]  # changed: what differs; added/removed: the entry's own fields


@dataclass(frozen=True)
class Costs:
    part: str  # a flow, "head" or "total"
    params_a: int
    params_b: int
    macs_a: int
    macs_b: int


@dataclass(frozen=True)
class SpecDiff:
    name_a: str
    name_b: str
    file_a: str | None
    file_b: str | None
    settings: tuple[FieldChange, ...]
    entries: tuple[EntryChange, ...]
    costs: tuple[Costs, ...]

    def as_data(self) -> dict[str, Any]:
        """Plain data for ``--json``, with the deltas written out."""
        data = asdict(self)
        for row in data["costs"]:
            row["params_delta"] = row["params_b"] - row["params_a"]
            row["macs_delta"] = row["macs_b"] - row["macs_a"]
        return data


# -- comparing ------------------------------------------------------------------------------

_OPTION_FIELDS = {name for name in ResolvedOptions.__dataclass_fields__ if not name.startswith("norm_")}


def _entry_fields(spec: Spec, flow: str, entry: BlockSpecModel) -> dict[str, Any]:
    """The entry's fields with what it inherits filled in: what the network is built from."""
    options = resolve_options(spec.defaults, getattr(spec, flow).defaults, kind_of(entry).options_layer(entry))
    fields = entry.model_dump(mode="json")
    for name in fields:
        if name == "norm":
            fields[name] = {"eps": options.norm_eps, "momentum": options.norm_momentum}
        elif fields[name] is None and name in _OPTION_FIELDS:
            value = getattr(options, name)
            fields[name] = list(value) if isinstance(value, tuple) else value
    return fields


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists stay whole values (a layout is one value)."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[FieldChange, ...]:
    a, b = _flatten(before), _flatten(after)
    keys = list(dict.fromkeys([*a, *b]))
    return tuple(FieldChange(key, a.get(key), b.get(key)) for key in keys if a.get(key) != b.get(key))


def _settings(spec: Spec) -> dict[str, Any]:
    """Everything but the block lists (those are compared entry by entry)."""
    data = resolved_data(spec)
    for flow in FLOWS:
        for part in ("stem", "blocks"):
            data.get(flow, {}).pop(part, None)
    return data


class _Side:
    """One spec with its plan, for looking up an entry's place and costs."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.plan: Plan = plan_spec(spec)
        self.costs: dict[str, tuple[int, int]] = {}
        self.places: dict[str, tuple[str | None, int | None]] = {}  # spec path -> (file, line)
        for block in self.plan.blocks:
            params, macs = self.costs.get(block.spec_path, (0, 0))
            self.costs[block.spec_path] = (params + block.params, macs + block.macs)
            self.places.setdefault(block.spec_path, (block.file, block.line))

    def entries(self, flow: str, part: str) -> list[BlockSpecModel]:
        return list(getattr(getattr(self.spec, flow), part))

    def cite(self, flow: str, part: str, index: int) -> Cited:
        path = format_path((flow, part, index))
        params, macs = self.costs.get(path, (0, 0))
        return Cited(path, *self.places.get(path, (None, None)), params, macs)

    def flow_costs(self) -> dict[str, tuple[int, int]]:
        costs = {flow.name: (sum(b.params for b in (*flow.stem, *flow.blocks)),
                             sum(b.macs for b in (*flow.stem, *flow.blocks))) for flow in self.plan.flows}
        costs["head"] = (self.plan.head.params, self.plan.head.macs)
        costs["total"] = (self.plan.total_params, self.plan.total_macs)
        return costs


def _compare_part(a: _Side, b: _Side, flow: str, part: str) -> list[EntryChange]:
    fields_a = [_entry_fields(a.spec, flow, e) for e in a.entries(flow, part)]
    fields_b = [_entry_fields(b.spec, flow, e) for e in b.entries(flow, part)]
    keys_a = [json.dumps(f, sort_keys=True) for f in fields_a]
    keys_b = [json.dumps(f, sort_keys=True) for f in fields_b]
    changes: list[EntryChange] = []
    matcher = difflib.SequenceMatcher(a=keys_a, b=keys_b, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        paired = min(a1 - a0, b1 - b0) if tag == "replace" else 0
        for offset in range(paired):
            i, j = a0 + offset, b0 + offset
            changes.append(EntryChange("changed", a.cite(flow, part, i), b.cite(flow, part, j),
                                       _changes(fields_a[i], fields_b[j])))
        for i in range(a0 + paired, a1):
            changes.append(EntryChange("removed", a.cite(flow, part, i), None, _changes(fields_a[i], {})))
        for j in range(b0 + paired, b1):
            changes.append(EntryChange("added", None, b.cite(flow, part, j), _changes({}, fields_b[j])))
    return changes


def diff_specs(spec_a: Spec, spec_b: Spec) -> SpecDiff:
    """What differs between two loaded specs; raises ``SpecError`` if either cannot be planned."""
    a, b = _Side(spec_a), _Side(spec_b)
    entries = [change for flow in FLOWS for part in ("stem", "blocks") for change in _compare_part(a, b, flow, part)]
    costs_a, costs_b = a.flow_costs(), b.flow_costs()
    costs = tuple(Costs(part, costs_a[part][0], costs_b[part][0], costs_a[part][1], costs_b[part][1])
                  for part in costs_a)
    return SpecDiff(spec_a.name, spec_b.name, _file_of(spec_a), _file_of(spec_b),
                    _changes(_settings(spec_a), _settings(spec_b)), tuple(entries), costs)


def _file_of(spec: Spec) -> str | None:
    return spec.source.files[0] if spec.source and spec.source.files else None


# -- the text report ------------------------------------------------------------------------

def show_value(value: Any, limit: int | None = None) -> str:
    """A value as a spec would write it: ``[act, dw, pw, norm]``, ``true``, ``null`` (text longer
    than ``limit`` cut short)."""
    if limit is not None:
        text = show_value(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def _where(cited: Cited | None) -> str:
    return "?" if cited is None else cite(cited.file, cited.line, unknown="?")


def _entry_lines(change: EntryChange) -> list[str]:
    cited = change.b if change.status == "added" else change.a
    assert cited is not None
    if change.status == "changed":
        assert change.a is not None and change.b is not None
        path = change.a.spec_path if change.a.spec_path == change.b.spec_path \
            else f"{change.a.spec_path} -> {change.b.spec_path}"
        head = f"  changed  {path}  ({_where(change.a)} -> {_where(change.b)})"
        lines = [head, *(f"      {c.field}: {show_value(c.before)} -> {show_value(c.after)}" for c in change.fields)]
        lines.append(f"      params: {change.a.params:,} -> {change.b.params:,} "
                     f"({_signed(change.b.params - change.a.params)}), "
                     f"MACs: {human_count(change.a.macs)} -> {human_count(change.b.macs)}")
        return lines
    values = {c.field: c.after if change.status == "added" else c.before for c in change.fields}
    shown = ", ".join(f"{k}: {show_value(v)}" for k, v in values.items())
    return [f"  {change.status:<7}  {cited.spec_path}  ({_where(cited)})",
            f"      {{{shown}}}", f"      params: {cited.params:,}, MACs: {human_count(cited.macs)}"]


def format_diff(diff: SpecDiff) -> str:
    """Settings, then blocks, then the costs table."""
    lines = [f"{diff.name_a} ({diff.file_a}) -> {diff.name_b} ({diff.file_b})", "", "settings"]
    if diff.settings:
        settings = [(f"  {c.field}", show_value(c.before, 50), "->", show_value(c.after, 50))
                    for c in diff.settings]
        lines += render_table(("", "A", "", "B"), settings)[1:]
    else:
        lines.append("  (the same)")
    lines += ["", "blocks (after defaults and extends)"]
    if diff.entries:
        for change in diff.entries:
            lines += _entry_lines(change)
    else:
        lines.append("  (the same)")
    costs = [(c.part, f"{c.params_a:,}", f"{c.params_b:,}", _signed(c.params_b - c.params_a),
             human_count(c.macs_a), human_count(c.macs_b), human_count(c.macs_b - c.macs_a, signed=True))
             for c in diff.costs]
    table = render_table(("", "params A", "params B", "change", "MACs A", "MACs B", "change"), costs,
                         right={1, 2, 3, 4, 5, 6})
    lines += ["", "costs", table[0], "-" * len(table[0]), *table[1:-1], "-" * len(table[0]), table[-1]]
    return "\n".join(lines)
