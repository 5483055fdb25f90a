"""Deriving a variant before validation sees it: ``extends: other.yaml`` (deep merge, the child
wins, lists are replaced whole, cycles refused) and ``--set PATH=VALUE`` overrides from the
command line. Positions travel with the values, so errors still name the file and line (or the
``--set`` that wrote a value).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .catalog import locate
from .errors import Location, SpecError
from .source import PathKey, SpecSource, format_path, parse_value, parse_yaml, read_spec_text, shown_text

# -- extends ------------------------------------------------------------------------------

def _deep_merge(base: Any, child: Any) -> Any:
    if isinstance(base, dict) and isinstance(child, dict):
        merged = dict(base)
        for key, value in child.items():
            merged[key] = _deep_merge(base[key], value) if key in base else value
        return merged
    return child  # scalars and lists: the child replaces the base whole


def _merge_locations(base: SpecSource, child: SpecSource) -> dict[PathKey, Location]:
    merged = dict(base.locations)
    # Everything under a path the child writes now comes from the child, except the parts of a
    # mapping the child did not touch.
    for path in child.locations:
        if path and isinstance(_get(child.data, path), list):
            merged = {p: loc for p, loc in merged.items() if p[: len(path)] != path}
    merged.update(child.locations)
    return merged


def _get(data: Any, path: PathKey) -> Any:
    for part in path:
        data = data[part]
    return data


def load_source(path: str | os.PathLike[str], _chain: tuple[Path, ...] = ()) -> SpecSource:
    """Read a spec file and everything it ``extends``, merged into one source.

    ``path`` and every ``extends`` resolve through :func:`catalog.locate`: an existing file (for
    ``extends``, relative to the extending file) wins, else a shipped spec of that name."""
    file = locate(path)
    text = read_spec_text(file)  # first: it turns a path that cannot be a file into a SpecError
    try:
        resolved = file.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        resolved = Path(os.path.abspath(file))
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise SpecError(f"'extends' cycle: {cycle}", location=Location(str(file)),
                        hint="a spec may not extend itself, directly or through other specs")
    source = parse_yaml(text, str(file))
    parent_ref = source.data.pop("extends", None)
    if parent_ref is None:
        return source
    extends_location = source.locations.pop(("extends",), None)
    if not isinstance(parent_ref, str) or not parent_ref:
        raise SpecError("'extends' must be the path of another spec file (relative to this one) "
                        "or the name of a shipped spec",
                        location=extends_location, spec_path="extends")
    parent_path = locate(parent_ref, file.parent)
    try:
        parent = load_source(parent_path, (*_chain, resolved))
    except SpecError as exc:
        if exc.location is not None and exc.location.line is None:
            # The parent itself is missing or unreadable: point at the 'extends' line that named it.
            raise SpecError(f"cannot extend '{shown_text(parent_ref)}': {exc.message}", location=extends_location,
                            spec_path="extends", hint=exc.hint) from exc
        raise
    return SpecSource(data=_deep_merge(parent.data, source.data),
                      locations=_merge_locations(parent, source),
                      files=(str(file), *parent.files))


# -- --set PATH=VALUE ---------------------------------------------------------------------

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def parse_override_path(text: str, location: Location | None = None) -> PathKey:
    """``entry.blocks[2].stride`` -> ``("entry", "blocks", 2, "stride")``."""
    parts: list[str | int] = []
    for segment in text.split("."):
        match = _SEGMENT.fullmatch(segment)
        if not match:
            shown = shown_text(text, 200)
            raise SpecError(f"bad --set path '{shown}'", location=location or Location("--set"),
                            hint="write PATH=VALUE with PATH like middle.repeat or entry.blocks[2].stride")
        parts.append(match.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(parts)


def apply_overrides(source: SpecSource, overrides: Sequence[str]) -> SpecSource:
    """Apply ``PATH=VALUE`` overrides; VALUE is read as YAML (``4``, ``relu``, ``[1, 2]``)."""
    data = copy.deepcopy(source.data)
    locations = dict(source.locations)
    for override in overrides:
        shown = shown_text(override, 200)
        where = Location(f"--set {shown}")
        if "=" not in override:
            raise SpecError(f"bad --set '{shown}': expected PATH=VALUE", location=where,
                            hint="e.g. --set middle.repeat=4 or --set head.num_classes=10")
        raw_path, raw_value = override.split("=", 1)
        path = parse_override_path(raw_path.strip(), where)
        value = parse_value(raw_value, where)
        target: Any = data
        for depth, part in enumerate(path[:-1]):
            here = path[: depth + 1]
            if isinstance(part, int):
                if not isinstance(target, list):
                    raise SpecError(f"cannot take item [{part}]: {_what(path[:depth])} is not a list",
                                    location=where, spec_path=format_path(here))
                if part >= len(target):
                    raise SpecError(f"no list item [{part}] here (the list has {len(target)})",
                                    location=where, spec_path=format_path(here))
                target = target[part]
            else:
                if not isinstance(target, dict):
                    raise SpecError(f"'{part}' cannot be set: {_what(path[:depth])} is not a mapping",
                                    location=where, spec_path=format_path(here))
                if part not in target:
                    target[part] = {}
                    locations[here] = where  # a key this override creates is located at the override
                target = target[part]
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(target, list):
                raise SpecError(f"cannot set item [{last}]: {_what(path[:-1])} is not a list", location=where,
                                spec_path=format_path(path))
            if last >= len(target):
                raise SpecError(f"no list item [{last}] to set (the list has {len(target)})", location=where,
                                spec_path=format_path(path))
            target[last] = value
        else:
            if not isinstance(target, dict):
                raise SpecError(f"cannot set '{last}': {_what(path[:-1])} is not a mapping", location=where,
                                spec_path=format_path(path))
            target[last] = value
        locations = {p: loc for p, loc in locations.items() if p[: len(path)] != path}
        locations[path] = where
    return SpecSource(data=data, locations=locations, files=source.files)


def _what(path: PathKey) -> str:
    return format_path(path) or "the spec"
