"""Reading spec files: YAML text -> plain data plus the file position of every value.

This is the only module that reads YAML. It returns plain dicts and lists (never objects built
from tags: ``yaml.safe_load``'s constructor only) together with a map from each spec path to
where it was written, so that every later error can name file, line and column.
``variants`` builds on it to apply ``extends`` and ``--set``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .catalog import not_found_hint
from .errors import Location, SpecError

PathKey = tuple[str | int, ...]


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(path: Iterable[str | int]) -> str:
    """``("entry", "blocks", 2, "stride")`` -> ``entry.blocks[2].stride``; a key that is not a plain
    name is quoted, so the path stays one unambiguous line: ``input['my key']``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            text += f"[{part!r}]"
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

_YAML_TAG_PREFIX = "tag:yaml.org,2002:"
_COLLECTION_TAGS = {"MappingNode": _YAML_TAG_PREFIX + "map", "SequenceNode": _YAML_TAG_PREFIX + "seq"}
# A spec is a few hundred values; this bounds what aliases can expand to ("billion laughs").
_MAX_VALUES = 100_000
_PLAIN_VALUES = "a spec holds plain values only: numbers, text, true/false, null, lists and mappings"


class _ScalarConstructor(yaml.constructor.SafeConstructor):
    """The safe constructor, reading a plain ``=`` or ``<<`` value as the text it is (YAML 1.1
    gives them tags of their own that the safe loader cannot construct)."""


# types-PyYAML types add_constructor for Loader classes only; a bare constructor works the same.
for _tag in ("value", "merge"):
    _ScalarConstructor.add_constructor(  # type: ignore[type-var]
        _YAML_TAG_PREFIX + _tag, _ScalarConstructor.construct_yaml_str)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML_TAG_PREFIX):] if tag.startswith(_YAML_TAG_PREFIX) else tag


def _node_location(node: yaml.Node, file: str) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Constructor:
    """Turns a composed YAML node tree into plain dicts, lists and scalars, recording where each
    value was written. Only the safe loader's scalar types are built; any other tag (such as
    ``!!python/object``), an alias that contains itself and duplicate keys are refused."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.locations: dict[PathKey, Location] = {}
        self._scalars = _ScalarConstructor()
        self._values = 0
        self._open: set[int] = set()  # ids of the collections being built (alias cycles)

    def fail(self, message: str, node: yaml.Node, path: PathKey, hint: str | None = None) -> NoReturn:
        raise SpecError(message, location=_node_location(node, self.file),
                        spec_path=format_path(path) or None, hint=hint)

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self._values += 1
        if self._values > _MAX_VALUES:
            self.fail(f"the document expands to more than {_MAX_VALUES:,} values", node, path,
                      hint="aliases (*name) that repeat large parts of the document multiply its size")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        expected = _COLLECTION_TAGS.get(type(node).__name__)
        if node.tag != expected:
            self.fail(f"unsupported YAML tag '{_short_tag(node.tag)}'", node, path, hint=_PLAIN_VALUES)
        if id(node) in self._open:
            self.fail("this alias refers to a value that contains it (a recursive alias)", node, path)
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            assert isinstance(node, yaml.SequenceNode)  # the tag check above leaves only these two
            return self.sequence(node, path)
        finally:
            self._open.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: PathKey) -> Any:
        try:
            return self._scalars.construct_object(node)
        except yaml.constructor.ConstructorError:
            self.fail(f"unsupported YAML tag '{_short_tag(node.tag)}'", node, path, hint=_PLAIN_VALUES)
        except Exception:  # the constructor's own failures, e.g. `!!int abc`, `!!int ''`
            self.fail(f"cannot read {shown_text(repr(node.value))} as {_short_tag(node.tag)}", node, path)

    def mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_TAG_PREFIX + "merge":
                self.fail("a mapping key must be a plain name", key_node, path,
                          hint="merge keys (<<) and lists or mappings as keys are not supported")
            key = self.scalar(key_node, path)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                first = self.locations.get((*path, key))
                where = f" (first written at line {first.line})" if first else ""
                self.fail(f"duplicate key {key!r}{where}", key_node, (*path, key),
                          hint="YAML keeps only the last of duplicate keys; write each key once")
            self.locations[(*path, key)] = _node_location(key_node, self.file)
            result[key] = self.build(value_node, (*path, key))
        return result

    def sequence(self, node: yaml.SequenceNode, path: PathKey) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.locations[(*path, index)] = _node_location(item, self.file)
            items.append(self.build(item, (*path, index)))
        return items


# A spec is a few kilobytes; this stops `/dev/zero` or a multi-gigabyte file given by mistake.
MAX_SPEC_BYTES = 4 << 20


def shown_text(text: str, limit: int = 80) -> str:
    """User text quoted inside a message: control characters escaped, long text shortened."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_spec_text(path: Path) -> str:
    where = Location(str(path))
    try:
        if not path.exists():
            raise SpecError("file not found", location=where, hint=not_found_hint(path))
        if path.is_dir():
            raise SpecError("is a directory, expected a YAML spec file", location=where)
        with path.open("rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)
    except PermissionError as exc:
        raise SpecError("cannot read the file: permission denied", location=where) from exc
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror or exc}", location=where) from exc
    except ValueError as exc:  # e.g. a NUL character in the path
        raise SpecError(f"not a usable file path: {exc}", location=Location(shown_text(str(path)))) from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"the file is larger than {MAX_SPEC_BYTES >> 20} MiB; expected a YAML spec",
                        location=where)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x}); expected a YAML spec",
                        location=Location(str(path), line, column)) from exc


def _compose(text: str, file: str) -> yaml.Node | None:
    """YAML text -> node tree, with every syntax error as a located ``SpecError``."""
    try:
        return yaml.compose(text, Loader=_SpecLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        message = f"malformed YAML: {exc.problem or exc.context}"
        start = exc.context_mark
        if exc.problem and exc.context and start is not None and mark is not None \
                and (start.line, start.column) != (mark.line, mark.column):
            if exc.context.startswith("while "):  # "while parsing a flow sequence"
                message += f" ({exc.context} that starts at line {start.line + 1}, column {start.column + 1})"
            else:  # "expected a single document in the stream"
                message = f"malformed YAML: {exc.context}, {exc.problem}"
        raise SpecError(message, location=location) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. NUL
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError(f"malformed YAML: character {character} is not allowed in YAML text",
                        location=Location(file, line, column)) from exc
    except yaml.YAMLError as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SpecError(f"malformed YAML: {shown_text(first_line)}", location=Location(file, 1, 1)) from exc
    except RecursionError as exc:
        raise SpecError("malformed YAML: lists or mappings are nested too deeply",
                        location=Location(file, 1, 1)) from exc


def parse_yaml(text: str, file: str) -> SpecSource:
    """Parse one YAML document into plain data with positions (safe loader only)."""
    node = _compose(text, file)
    if node is None:
        raise SpecError("the spec is empty; expected a mapping with input, entry, middle, exit and head",
                        location=Location(file, 1, 1))
    constructor = _Constructor(file)
    constructor.locations[()] = _node_location(node, file)
    try:
        data = constructor.build(node, ())
    except RecursionError as exc:
        raise SpecError("lists or mappings are nested too deeply",
                        location=_node_location(node, file)) from exc
    if not isinstance(data, dict):
        kinds = {list: "a list", str: "text", bool: "true or false", int: "a number", float: "a number"}
        got = "null" if data is None else kinds.get(type(data), f"a {type(data).__name__}")
        raise SpecError(f"a spec must be a mapping of sections, got {got}",
                        location=constructor.locations[()],
                        hint="e.g. name: ..., entry: {blocks: [...]}, exit: {blocks: [...]}")
    return SpecSource(data=data, locations=constructor.locations, files=(file,))


def parse_value(raw: str, where: Location) -> Any:
    """An override's VALUE, read like a value in a spec file (same loader, same refusals)."""
    hint = "VALUE is read as YAML: 4, 1e-3, relu, [1, 2], {eps: 1e-3}; quote text with YAML syntax in it"
    shown = shown_text(raw, 200)
    try:
        node = yaml.compose(raw, Loader=_SpecLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise SpecError(f"bad --set value '{shown}': not a YAML value", location=where, hint=hint) from exc
    if node is None:  # empty, or only a comment
        return None
    try:
        return _Constructor(str(where)).build(node, ())
    except SpecError as exc:
        raise SpecError(f"bad --set value '{shown}': {exc.message}", location=where, hint=exc.hint) from exc
    except RecursionError as exc:
        raise SpecError(f"bad --set value '{shown}': nested too deeply", location=where) from exc
