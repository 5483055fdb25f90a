"""Reading spec files: YAML text -> plain data plus the file position of every value.

This is the only module that reads YAML. It returns plain dicts and lists (never objects built
from tags: ``yaml.safe_load``'s constructor only) together with a map from each spec path to
where it was written, so that every later error can name file, line and column.

It also applies the two ways of deriving a variant, before validation sees anything:
``extends: other.yaml`` (deep merge, the child wins, lists are replaced whole) and
``--set PATH=VALUE`` overrides from the command line.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Location, SpecError

PathKey = tuple[str | int, ...]


def format_path(path: Iterable[str | int]) -> str:
    """``("entry", "blocks", 2, "stride")`` -> ``entry.blocks[2].stride``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass
class SpecSource:
    """Plain spec data and where each value of it was written."""

    data: dict[str, Any]
    locations: dict[PathKey, Location] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # the spec file first, then the files it extends

    def location_of(self, path: Sequence[str | int]) -> Location | None:
        """The position of ``path``, or of its nearest enclosing value that has one."""
        key = tuple(path)
        while True:
            if key in self.locations:
                return self.locations[key]
            if not key:
                return None
            key = key[:-1]

    @property
    def root_location(self) -> Location | None:
        return self.locations.get(())


# -- YAML -> data with positions -----------------------------------------------------------

class _SpecLoader(yaml.SafeLoader):
    """The safe loader, plus YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-3`` as a *string*,
    which would turn ``eps: 1e-3`` into a confusing type error."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
_scalar_constructor = yaml.constructor.SafeConstructor()


def _node_location(node: yaml.Node, file: str) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _construct(node: yaml.Node, file: str, path: PathKey,
               locations: dict[PathKey, Location]) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("a mapping key must be a plain name", location=_node_location(key_node, file),
                                spec_path=format_path(path) or None)
            key = _scalar_constructor.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                first = locations.get((*path, key))
                raise SpecError(
                    f"duplicate key '{key}'" + (f" (first written at line {first.line})" if first else ""),
                    location=_node_location(key_node, file), spec_path=format_path((*path, key)),
                    hint="YAML keeps only the last of duplicate keys; write each key once")
            locations[(*path, key)] = _node_location(key_node, file)
            result[key] = _construct(value_node, file, (*path, key), locations)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            locations[(*path, index)] = _node_location(item, file)
            items.append(_construct(item, file, (*path, index), locations))
        return items
    return _scalar_constructor.construct_object(node)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise SpecError("file not found", location=Location(str(path)),
                        hint="give the path of a spec file, e.g. specs/xception.yaml")
    if path.is_dir():
        raise SpecError("is a directory, expected a YAML spec file", location=Location(str(path)))
    try:
        return path.read_text(encoding="utf-8")
    except PermissionError as exc:
        raise SpecError("cannot read the file: permission denied", location=Location(str(path))) from exc
    except UnicodeDecodeError as exc:
        raise SpecError("the file is not UTF-8 text; expected a YAML spec", location=Location(str(path))) from exc
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror}", location=Location(str(path))) from exc


def parse_yaml(text: str, file: str) -> SpecSource:
    """Parse one YAML document into plain data with positions (safe loader only)."""
    try:
        node = yaml.compose(text, Loader=_SpecLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise SpecError(f"malformed YAML: {exc.problem or exc.context}", location=location) from exc
    except yaml.YAMLError as exc:  # e.g. several documents in one file
        raise SpecError(f"malformed YAML: {exc}", location=Location(file)) from exc
    if node is None:
        raise SpecError("the spec is empty; expected a mapping with input, entry, middle, exit and head",
                        location=Location(file))
    locations: dict[PathKey, Location] = {(): _node_location(node, file)}
    try:
        data = _construct(node, file, (), locations)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        location = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise SpecError(f"unsupported YAML value: {exc.problem}", location=location) from exc
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of sections, got a {type(data).__name__}",
                        location=locations[()])
    return SpecSource(data=data, locations=locations, files=(file,))


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
    """Read a spec file and everything it ``extends``, merged into one source."""
    file = Path(path)
    resolved = file.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise SpecError(f"'extends' cycle: {cycle}", location=Location(str(file)),
                        hint="a spec may not extend itself, directly or through other specs")
    source = parse_yaml(_read_text(file), str(file))
    parent_ref = source.data.pop("extends", None)
    if parent_ref is None:
        return source
    extends_location = source.locations.pop(("extends",), None)
    if not isinstance(parent_ref, str) or not parent_ref:
        raise SpecError("'extends' must be the path of another spec file (relative to this one)",
                        location=extends_location, spec_path="extends")
    parent_path = (file.parent / parent_ref)
    try:
        parent = load_source(parent_path, (*_chain, resolved))
    except SpecError as exc:
        if exc.location is not None and exc.location.file == str(parent_path) and exc.location.line is None:
            # The parent itself is missing or unreadable: point at the 'extends' line that named it.
            raise SpecError(f"cannot extend '{parent_ref}': {exc.message}", location=extends_location,
                            spec_path="extends", hint=exc.hint) from exc
        raise
    return SpecSource(data=_deep_merge(parent.data, source.data),
                      locations=_merge_locations(parent, source),
                      files=(str(file), *parent.files))


# -- --set PATH=VALUE ---------------------------------------------------------------------

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def parse_override_path(text: str) -> PathKey:
    """``entry.blocks[2].stride`` -> ``("entry", "blocks", 2, "stride")``."""
    parts: list[str | int] = []
    for segment in text.split("."):
        match = _SEGMENT.fullmatch(segment)
        if not match:
            raise SpecError(f"bad --set path '{text}'", location=Location("--set"),
                            hint="write PATH=VALUE with PATH like middle.repeat or entry.blocks[2].stride")
        parts.append(match.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(parts)


def apply_overrides(source: SpecSource, overrides: Sequence[str]) -> SpecSource:
    """Apply ``PATH=VALUE`` overrides; VALUE is read as YAML (``4``, ``relu``, ``[1, 2]``)."""
    data = copy.deepcopy(source.data)
    locations = dict(source.locations)
    for override in overrides:
        where = Location(f"--set {override}")
        if "=" not in override:
            raise SpecError(f"bad --set '{override}': expected PATH=VALUE", location=where,
                            hint="e.g. --set middle.repeat=4 or --set head.num_classes=10")
        raw_path, raw_value = override.split("=", 1)
        path = parse_override_path(raw_path.strip())
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else None
        except yaml.YAMLError as exc:
            raise SpecError(f"bad --set value '{raw_value}': not a YAML value", location=where) from exc
        target: Any = data
        for depth, part in enumerate(path[:-1]):
            here = format_path(path[: depth + 1])
            if isinstance(part, int):
                if not isinstance(target, list) or part >= len(target):
                    size = len(target) if isinstance(target, list) else 0
                    raise SpecError(f"no list item [{part}] here (the list has {size})", location=where,
                                    spec_path=here)
                target = target[part]
            else:
                if not isinstance(target, dict):
                    raise SpecError(f"'{part}' cannot be set: its parent is not a mapping", location=where,
                                    spec_path=here)
                target = target.setdefault(part, {})
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(target, list) or last >= len(target):
                raise SpecError(f"no list item [{last}] to set", location=where, spec_path=format_path(path))
            target[last] = value
        else:
            if not isinstance(target, dict):
                raise SpecError("cannot set a key inside a value that is not a mapping", location=where,
                                spec_path=format_path(path))
            target[last] = value
        locations = {p: loc for p, loc in locations.items() if p[: len(path)] != path}
        locations[path] = where
    return SpecSource(data=data, locations=locations, files=source.files)
