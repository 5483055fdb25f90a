"""The spec language: validated, immutable models of a spec file, and ``load_spec``.

A spec declares the entry, middle and exit flows of an Xception-family network. ``load_spec``
reads it (``source``), validates it here, and turns every validation failure into one
``SpecError`` that names the file, line, column and spec path, with the valid choices.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import Discriminator, Field, PrivateAttr, Tag, ValidationError, model_validator

from .blocks import BLOCK_KINDS, DEFAULT_KIND, BlockSpecModel
from .errors import SpecError, SpecErrors
from .options import BlockOptions, Defaults, SpecValueError, StrictModel
from .source import SpecSource, format_path
from .variants import apply_overrides, load_source


def _block_kind_of(value: Any, default: str) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", default))
    return str(getattr(value, "kind", default))


class KindOf:
    """The discriminator of a stem or blocks entry: its ``kind``, or ``default`` when it has none.
    An object rather than a lambda so that the JSON Schema (``xception_build.schema``) can read
    the default kind and say the same thing to editors."""

    def __init__(self, default: str) -> None:
        self.default = default
        self.__name__ = "kind"  # pydantic-core names a callable discriminator by it

    def __call__(self, value: Any) -> str:
        return _block_kind_of(value, self.default)


def _entry_union(part: str) -> Any:
    """The union of every registered kind's spec model, told apart by ``kind`` (default: the
    kind of ``part``, a stem or a blocks list)."""
    return Annotated[
        Union[tuple(Annotated[kind.spec_model, Tag(name)] for name, kind in BLOCK_KINDS.items())],  # noqa: UP007
        Discriminator(KindOf(DEFAULT_KIND[part])),
    ]


def _size_schema(schema: dict[str, Any]) -> None:
    """JSON Schema of ``input.size``: what ``InputSpec._consistent`` checks, a positive side or
    exactly two positive values."""
    for branch in schema.get("anyOf", ()):
        if branch.get("type") == "integer":
            branch["exclusiveMinimum"] = 0
        elif branch.get("type") == "array":
            branch.update(minItems=2, maxItems=2)
            branch["items"]["exclusiveMinimum"] = 0


# Built from the registry at import time, which a type checker cannot follow: it sees the base model.
if TYPE_CHECKING:
    StemEntry = BlockSpecModel
    BlockEntry = BlockSpecModel
else:
    StemEntry = _entry_union("stem")
    BlockEntry = _entry_union("blocks")


class InputSpec(StrictModel):
    size: int | list[int] = Field(default=299, description="side, or [height, width]",
                                  json_schema_extra=_size_schema)
    channels: int = Field(default=3, gt=0)
    mean: list[float] = [0.5, 0.5, 0.5]
    std: list[float] = [0.5, 0.5, 0.5]
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    crop_pct: float = Field(default=0.875, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        sizes = self.size if isinstance(self.size, list) else [self.size]
        if isinstance(self.size, list) and len(sizes) != 2:
            raise SpecValueError(f"size must be one side (224) or two values [height, width], got {self.size}",
                                 ("size",))
        if any(s <= 0 for s in sizes):
            raise SpecValueError(f"size must be a positive side or [height, width], got {self.size}",
                                 ("size",))
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise SpecValueError(f"{name} needs one value per input channel ({self.channels}), "
                                     f"got {len(getattr(self, name))}", (name,))
        if any(s <= 0 for s in self.std):
            raise SpecValueError(f"std values must be positive, got {self.std}", ("std",))
        return self

    @property
    def height_width(self) -> tuple[int, int]:
        if isinstance(self.size, list):
            return (self.size[0], self.size[1])
        return (self.size, self.size)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image, as the model takes it."""
        return (self.channels, *self.height_width)


class ScalingSpec(StrictModel):
    width: float = Field(default=1.0, gt=0, description="channel multiplier; scaled counts round to `divisor`")
    depth: float = Field(default=1.0, gt=0, description="multiplier of the middle flow's repeat count")
    divisor: int = Field(default=8, gt=0)


class FlowSpec(StrictModel):
    defaults: BlockOptions | None = None
    stem: list[StemEntry] = Field(default=[], description="entries of any kind; `kind: conv` unless they say")
    blocks: list[BlockEntry] = Field(default=[], description="entries of any kind; `kind: xception` unless they say")
    repeat: int = Field(default=1, gt=0, description="the block list runs this many times")
    final_act: bool = Field(default=False, description="the flow's activation after its last block")


class HeadSpec(StrictModel):
    pool: Literal["avg", "max", "none"] = Field(default="avg", description="none: no pooling (needs num_classes 0)")
    dropout: float = Field(default=0.0, ge=0, lt=1)
    num_classes: int = Field(default=1000, ge=0, description="0: no classifier, pooled features out")

    @model_validator(mode="after")
    def _pool_for_classifier(self) -> HeadSpec:
        if self.pool == "none" and self.num_classes:
            raise SpecValueError("pool: none leaves a feature map, which a classifier cannot take; "
                                 "use num_classes: 0 with it, or pool: avg or max", ("pool",))
        return self


class Spec(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    input: InputSpec = InputSpec()
    defaults: Defaults = Defaults()
    scaling: ScalingSpec = ScalingSpec()
    entry: FlowSpec
    middle: FlowSpec = FlowSpec()
    exit: FlowSpec
    head: HeadSpec = HeadSpec()
    output_stride: Literal[8, 16, 32] | None = Field(
        default=None, description="largest reduction of the input; later strides become dilations")

    _source: SpecSource | None = PrivateAttr(default=None)

    @property
    def source(self) -> SpecSource | None:
        """Where each value was written (for error messages); ``None`` for specs built in code."""
        return self._source

    @model_validator(mode="after")
    def _stems_only_in_entry(self) -> Spec:
        for flow in ("middle", "exit"):
            if getattr(self, flow).stem:
                raise SpecValueError(f"only the entry flow has a stem; move {flow}.stem into entry.stem",
                                     (flow, "stem"))
        return self


FLOWS = ("entry", "middle", "exit")


# -- validation errors -> SpecError --------------------------------------------------------

Branch = tuple[tuple[str | int, ...], str | int, int]  # (data path where met, union tag, index in loc)


def _walk_loc(data: Any, loc: Sequence[str | int]) -> tuple[tuple[str | int, ...], list[Branch]]:
    """Split pydantic's ``loc`` into the path that exists in the data and the parts that do not:
    the union branch tags pydantic inserts (``int``, ``list[int]``, ``xception``)."""
    kept: list[str | int] = []
    branches: list[Branch] = []
    for index, part in enumerate(loc):
        in_mapping = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_mapping or in_list:
            data = data[part]
            kept.append(part)
        else:
            branches.append((tuple(kept), part, index))
    return tuple(kept), branches


def _data_path(data: Any, loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """The parts of pydantic's ``loc`` that exist in the data."""
    return _walk_loc(data, loc)[0]


def _models_in(annotation: Any) -> list[type[StrictModel]]:
    """Spec models mentioned anywhere in a field's type (through Optional, list, unions)."""
    found: list[type[StrictModel]] = []
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, StrictModel):
            found.append(current)
        stack.extend(getattr(current, "__args__", ()) or ())
        origin = getattr(current, "__origin__", None)
        if origin is not None and getattr(current, "__metadata__", None) is not None:
            stack.append(origin)
    return found


def _model_at(path: Sequence[str | int], data: Any) -> type[StrictModel] | None:
    """The spec model that validates the mapping at ``path`` (for valid-key suggestions)."""
    model: type[StrictModel] | None = Spec
    candidates: list[type[StrictModel]] = []
    key: str | int = ""
    for part in path:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            default = DEFAULT_KIND.get(str(key), "")
            kind = _block_kind_of(data, default) if isinstance(data, dict) else None
            by_kind = [m for m in candidates if m.model_fields.get("kind") is not None
                       and m.model_fields["kind"].default == kind]
            model = by_kind[0] if by_kind else (candidates[0] if len(candidates) == 1 else None)
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        data = data.get(part) if isinstance(data, dict) else None
        candidates = _models_in(field.annotation)
        model = candidates[0] if len(candidates) == 1 else None
        key = part
    return model


def _describe(value: Any) -> str:
    """A value as the spec's author wrote it (YAML spelling), shortened."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


# What a type error's kind says was expected ("expected a whole number, got 'abc'").
_EXPECTED = {
    "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "text",
    "list_type": "a list", "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
}
_BOUNDS = {"greater_than": ("gt", "greater than"), "greater_than_equal": ("ge", "at least"),
           "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}


def _explain(error: Mapping[str, Any], source: SpecSource, path: tuple[str | int, ...]) -> tuple[str, str | None]:
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = path[:-1]
        model = _model_at(parent, source.data)
        valid = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(path[-1]), valid, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + (f"valid keys: {', '.join(valid)}" if valid else "")
        return f"unknown key {path[-1]!r}", hint or None
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}", None
    if kind == "union_tag_invalid":
        known = sorted(BLOCK_KINDS)
        close = difflib.get_close_matches(str(ctx.get("tag")), known, n=1)
        written = value.get("kind") if isinstance(value, dict) else ctx.get("tag")
        return (f"unknown block kind {_describe(written)}",
                (f"did you mean '{close[0]}'? " if close else "") + f"known kinds: {', '.join(known)}")
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",") if c.strip(" '")]
        close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
        return (f"{_describe(value)} is not a valid choice",
                (f"did you mean '{close[0]}'? " if close else "") + f"valid choices: {', '.join(choices)}")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}", None
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"expected a value {words} {ctx.get(key)}, got {_describe(value)}", None
    if kind == "string_too_short":
        return "expected non-empty text", None
    message = error["msg"].removeprefix("Value error, ")
    cause = ctx.get("error")
    return message, cause.hint if isinstance(cause, SpecValueError) else None


def _error_path(error: Mapping[str, Any], data: Any) -> tuple[str | int, ...]:
    """The spec path an error is about (a path into the data, as the author wrote it)."""
    loc = error["loc"]
    if error["type"] == "missing":
        return _data_path(data, loc[:-1])
    if error["type"] == "extra_forbidden":
        return (*_data_path(data, loc[:-1]), loc[-1])
    path = _data_path(data, loc)
    if error["type"] == "union_tag_invalid":
        item = data
        for part in path:
            item = item[part]
        if isinstance(item, dict) and "kind" in item:
            path = (*path, "kind")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SpecValueError):  # a model validator naming the field it is about
        found = _data_path(data, (*path, *cause.at))
        missing = (*path, *cause.at)[len(found):]
        # a field the author left out is named all the same (reps), at the mapping that lacks it
        path = (*found, missing[0]) if len(missing) == 1 else found
    return path


def _branch_points(error: Mapping[str, Any], data: Any) -> list[tuple[tuple[str | int, ...], str | int]]:
    """Where an error passed through a union: (value path, branch) for each part of ``loc`` that
    names a union branch rather than a key or an index (a missing key's own name excepted)."""
    loc = error["loc"]
    _, branches = _walk_loc(data, loc)
    return [(path, part) for path, part, index in branches
            if not (error["type"] == "missing" and index == len(loc) - 1)]


def _problem(error: Mapping[str, Any], source: SpecSource, message: str | None = None) -> SpecError:
    """One pydantic error as one located ``SpecError`` (``message`` replaces the explained one)."""
    path = _error_path(error, source.data)
    explained, hint = _explain(error, source, path)
    text = message or explained
    if error["type"] == "missing" and not path:
        text += " in the spec"  # elsewhere the spec path prefixing the message says where
    return SpecError(text, location=source.location_of(path), spec_path=format_path(path) or None, hint=hint)


#: error index -> where its ``loc`` passed through a union: (value path, branch) pairs
Points = dict[int, list[tuple[tuple[str | int, ...], str | int]]]


def _union_group(start: int, errors: list[Any], points: Points,
                 source: SpecSource) -> tuple[list[int], list[SpecError]]:
    """The errors that one value produced by fitting no branch of a union (``out: int |
    list[int]`` gets one error per branch), and the problems they amount to: those of the branch
    that got furthest into the value (``out[1]: expected a whole number``), or, when none did, one
    problem saying what each branch expected (``expected a whole number or a list``)."""
    for site, _ in reversed(points[start]):
        group = [i for i in points if any(where == site for where, _ in points[i])]
        branches = {branch for i in group for where, branch in points[i] if where == site}
        if len(branches) < 2:
            continue

        def branch_of(i: int, site: tuple[str | int, ...] = site) -> str | int:
            return next(branch for where, branch in points[i] if where == site)

        best = max(group, key=lambda i: len(_error_path(errors[i], source.data)))
        if _error_path(errors[best], source.data) == site:
            expected = list(dict.fromkeys(_EXPECTED.get(errors[i]["type"], "") for i in group))
            if all(expected):
                message = f"expected {' or '.join(expected)}, got {_describe(errors[best].get('input'))}"
                return group, [_problem(errors[best], source, message)]
        return group, [_problem(errors[i], source) for i in group if branch_of(i) == branch_of(best)]
    return [start], [_problem(errors[start], source)]


def _missing_keys(errors: list[Any], points: Points, source: SpecSource) -> list[SpecError]:
    """One problem for all the required keys a mapping lacks ("missing required keys 'name',
    'entry' and 'exit' in the spec"), taking those errors out of ``points``."""
    by_mapping: dict[tuple[str | int, ...], list[int]] = {}
    for i, error in enumerate(errors):
        if error["type"] == "missing" and not points[i]:
            by_mapping.setdefault(_error_path(error, source.data), []).append(i)
    problems = []
    for indices in by_mapping.values():
        if len(indices) < 2:
            continue
        names = [repr(errors[i]["loc"][-1]) for i in indices]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        problems.append(_problem(errors[indices[0]], source, f"missing required keys {listed}"))
        for i in indices:
            del points[i]
    return problems


#: problems listed in one report; past this, a closing line counts the rest
MAX_PROBLEMS = 50


def _spec_errors(exc: ValidationError, source: SpecSource) -> SpecError:
    """Every problem pydantic found, each one located ``SpecError``, in file order."""
    errors = exc.errors(include_url=False)
    points = {i: _branch_points(error, source.data) for i, error in enumerate(errors)}
    problems = _missing_keys(errors, points, source)
    while points:
        group, found = _union_group(min(points), errors, points, source)
        problems.extend(found)
        for i in group:
            del points[i]
    unique = list({(str(p.location), p.spec_path, p.message): p for p in problems}.values())
    unique.sort(key=lambda problem: _file_order(problem, source))
    if len(unique) == 1:
        return unique[0]
    return SpecErrors(unique[:MAX_PROBLEMS], more=len(unique) - MAX_PROBLEMS)


def _file_order(problem: SpecError, source: SpecSource) -> tuple[int, int, int, int]:
    """The spec file first, then the files it extends, line by line; ``--set`` values last."""
    where = problem.location
    if where is None or where.line is None:
        return (1, 0, 0, 0)
    rank = source.files.index(where.file) if where.file in source.files else len(source.files)
    return (0, rank, where.line, where.column or 0)


# -- public API ---------------------------------------------------------------------------

def spec_from_source(source: SpecSource) -> Spec:
    try:
        spec = Spec.model_validate(source.data)
    except ValidationError as exc:
        raise _spec_errors(exc, source) from None
    spec._source = source
    return spec


def load_spec(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Spec:
    """Read, merge (``extends``), override (``--set``) and validate a spec file."""
    source = apply_overrides(load_source(path), overrides)
    return spec_from_source(source)


def resolved_data(spec: Spec) -> dict[str, Any]:
    """The spec as plain data with every default written out (``None`` = inherit, omitted)."""
    return spec.model_dump(mode="json", exclude_none=True)


def dump_resolved_yaml(spec: Spec) -> str:
    """YAML of the fully resolved spec: ``extends`` and ``--set`` applied, defaults explicit.

    Loading this text again gives the same network (tested)."""
    header = f"# {spec.name}: resolved by xception-build (extends, --set and defaults applied)\n"
    return header + yaml.safe_dump(resolved_data(spec), sort_keys=False, default_flow_style=None, width=100)


def spec_hash(spec: Spec) -> str:
    """sha256 of the canonical JSON of the resolved spec: same network, same hash."""
    canonical = json.dumps(resolved_data(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
