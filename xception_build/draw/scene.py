"""What a drawing is made of, between the layout (``layout.py``) and the SVG writer (``svg.py``).

A scene is boxes, text, lines and groups at absolute positions, each drawn in a named style. The
layout needs to know how wide a text will be before any renderer sees it, so every text is set in
a monospaced font (DejaVu Sans Mono, Menlo, Consolas: 0.6 em per character) except the titles,
which sit in ample space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MONO = "DejaVu Sans Mono, Menlo, Consolas, Liberation Mono, monospace"
SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
#: advance of one character of the monospaced fonts above, in em (DejaVu Sans Mono: 0.602), rounded up
MONO_ADVANCE = 0.61


@dataclass(frozen=True)
class TextStyle:
    size: float
    family: str = MONO
    bold: bool = False
    fill: str = "#1f2328"
    italic: bool = False


TextRole = Literal["title", "subtitle", "flow", "path", "cite", "badge", "step", "shared", "shortcut", "note",
                   "shape", "terminal", "repeat", "repeat_cite"]

TEXT_STYLES: dict[TextRole, TextStyle] = {
    "title": TextStyle(22, SANS, bold=True),
    "subtitle": TextStyle(14),
    "flow": TextStyle(18, SANS, bold=True),
    "path": TextStyle(13, bold=True),
    "cite": TextStyle(13, fill="#57606a"),
    "badge": TextStyle(14, bold=True, fill="#8250df"),
    "step": TextStyle(13),  # a step of the main path
    "shared": TextStyle(13),  # a step both paths share (before the shortcut branches off)
    "shortcut": TextStyle(13),  # a layer of the shortcut's projection, or "identity"
    "note": TextStyle(12, fill="#57606a"),
    "shape": TextStyle(12, fill="#0a5d2c", bold=True),
    "terminal": TextStyle(13, fill="#57606a", italic=True),
    "repeat": TextStyle(20, bold=True, fill="#8250df"),
    "repeat_cite": TextStyle(12, fill="#8250df"),
}

BoxRole = Literal["block", "head", "header", "step", "shared", "projection", "label", "dot", "repeat"]


def text_width(text: str, role: TextRole) -> float:
    """Width of ``text`` in pixels, in its style's font (monospaced: exact up to the rounding)."""
    return len(text) * TEXT_STYLES[role].size * MONO_ADVANCE


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    role: BoxRole


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # the baseline
    text: str
    role: TextRole
    anchor: Literal["start", "middle", "end"] = "start"


@dataclass(frozen=True)
class Line:
    """A polyline through ``points``; ``arrow``: with an arrowhead at its end."""

    points: tuple[tuple[float, float], ...]
    arrow: bool = True


@dataclass(frozen=True)
class Join:
    """The (+) where a residual shortcut adds into the main path."""

    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Group:
    """Elements that belong together (a block, a flow, an arrow and its label). ``role`` becomes the
    SVG class, ``data`` the ``data-*`` attributes that scripts and tests read back, ``tooltip`` the
    SVG ``<title>`` a browser shows on hover."""

    role: str
    children: tuple[Element, ...]
    data: tuple[tuple[str, str], ...] = ()
    tooltip: str | None = None


Element = Rect | Text | Line | Join | Group


@dataclass(frozen=True)
class Scene:
    width: float
    height: float
    title: str
    children: tuple[Element, ...]
