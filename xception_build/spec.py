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
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Discriminator, Field, PrivateAttr, Tag, ValidationError, model_validator

from .blocks import BLOCK_KINDS
from .blocks.conv import ConvBlockSpec
from .errors import SpecError
from .options import BlockOptions, Defaults, StrictModel
from .source import SpecSource, apply_overrides, format_path, load_source


def _block_kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "xception"))
    return str(getattr(value, "kind", "xception"))


# The union of every registered kind's spec model, told apart by `kind` (default: xception).
BlockSpec = Annotated[
    Union[tuple(Annotated[kind.spec_model, Tag(name)] for name, kind in BLOCK_KINDS.items())],  # type: ignore[misc]  # noqa: UP007
    Discriminator(_block_kind_of),
]


class InputSpec(StrictModel):
    size: int | list[int] = Field(default=299, description="side, or [height, width]")
    channels: int = Field(default=3, gt=0)
    mean: list[float] = [0.5, 0.5, 0.5]
    std: list[float] = [0.5, 0.5, 0.5]
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    crop_pct: float = Field(default=0.875, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        sizes = self.size if isinstance(self.size, list) else [self.size]
        if len(sizes) not in (1, 2) or any(s <= 0 for s in sizes):
            raise ValueError(f"size must be a positive side or [height, width], got {self.size}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ValueError(f"{name} needs one value per input channel ({self.channels}), "
                                 f"got {len(getattr(self, name))}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self

    @property
    def height_width(self) -> tuple[int, int]:
        if isinstance(self.size, list):
            return (self.size[0], self.size[-1])
        return (self.size, self.size)


class ScalingSpec(StrictModel):
    width: float = Field(default=1.0, gt=0, description="channel multiplier; scaled counts round to `divisor`")
    depth: float = Field(default=1.0, gt=0, description="multiplier of the middle flow's repeat count")
    divisor: int = Field(default=8, gt=0)


class FlowSpec(StrictModel):
    defaults: BlockOptions | None = None
    stem: list[ConvBlockSpec] = []
    blocks: list[BlockSpec] = []
    repeat: int = Field(default=1, gt=0, description="the block list runs this many times")
    final_act: bool = Field(default=False, description="the flow's activation after its last block")


class HeadSpec(StrictModel):
    pool: Literal["avg", "max"] = "avg"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    num_classes: int = Field(default=1000, ge=0, description="0: no classifier, pooled features out")


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

    _source: SpecSource | None = PrivateAttr(default=None)

    @property
    def source(self) -> SpecSource | None:
        """Where each value was written (for error messages); ``None`` for specs built in code."""
        return self._source

    @model_validator(mode="after")
    def _stems_only_in_entry(self) -> Spec:
        for flow in ("middle", "exit"):
            if getattr(self, flow).stem:
                raise ValueError(f"only the entry flow has a stem; move {flow}.stem into entry.stem")
        return self


FLOWS = ("entry", "middle", "exit")


# -- validation errors -> SpecError --------------------------------------------------------

def _data_path(data: Any, loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """Keep the parts of pydantic's ``loc`` that exist in the data (drops union tags such as
    ``int`` or ``xception`` that pydantic inserts)."""
    kept: list[str | int] = []
    for part in loc:
        in_mapping = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_mapping or in_list:
            data = data[part]
            kept.append(part)
    return tuple(kept)


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
    for part in path:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            kind = _block_kind_of(data) if isinstance(data, dict) else None
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
    return model


def _describe(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) < 60 else text[:57] + "..."


def _explain(error: dict[str, Any], source: SpecSource, path: tuple[str | int, ...]) -> tuple[str, str | None]:
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = path[:-1]
        model = _model_at(parent, source.data)
        valid = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(path[-1]), valid, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + (f"valid keys: {', '.join(valid)}" if valid else "")
        return f"unknown key '{path[-1]}'", hint or None
    if kind == "missing":
        return f"missing required key '{error['loc'][-1]}'", None
    if kind == "union_tag_invalid":
        known = sorted(BLOCK_KINDS)
        close = difflib.get_close_matches(str(ctx.get("tag")), known, n=1)
        return (f"unknown block kind '{ctx.get('tag')}'",
                (f"did you mean '{close[0]}'? " if close else "") + f"known kinds: {', '.join(known)}")
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",") if c.strip(" '")]
        close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
        return (f"{_describe(value)} is not a valid choice",
                (f"did you mean '{close[0]}'? " if close else "") + f"valid choices: {', '.join(choices)}")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_describe(value)}", None
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_describe(value)}", None
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_describe(value)}", None
    if kind in ("string_type",):
        return f"expected text, got {_describe(value)}", None
    if kind in ("list_type",):
        return f"expected a list, got {_describe(value)}", None
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_describe(value)}", None
    message = error["msg"].removeprefix("Value error, ")
    return message, None


def _spec_error(exc: ValidationError, source: SpecSource) -> SpecError:
    errors = exc.errors(include_url=False)
    # Prefer the error pydantic reports deepest: with tagged unions the shallow ones repeat it.
    first = errors[0]
    path = _data_path(source.data, first["loc"])
    if first["type"] == "extra_forbidden" or first["type"] == "missing":
        path = _data_path(source.data, first["loc"][:-1]) + ((first["loc"][-1],) if first["type"] ==
                                                               "extra_forbidden" else ())
    message, hint = _explain(first, source, path)
    if first["type"] == "missing":
        message += f" in {format_path(path) or 'the spec'}"
    if len(errors) > 1:
        more = f"({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after this one)"
        hint = f"{hint}\n  {more}" if hint else more
    return SpecError(message, location=source.location_of(path), spec_path=format_path(path) or None,
                     hint=hint)


# -- public API ---------------------------------------------------------------------------

def spec_from_source(source: SpecSource) -> Spec:
    try:
        spec = Spec.model_validate(source.data)
    except ValidationError as exc:
        raise _spec_error(exc, source) from None
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
