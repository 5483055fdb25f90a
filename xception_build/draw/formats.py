"""The files ``xbuild draw`` writes: SVG, a self-contained HTML page around it, or a PNG of it.

The file name's extension picks the format. The PNG is the SVG rasterized by resvg (the
``resvg-py`` wheel ships it compiled: no system library, no browser), imported only when a PNG is
asked for; without it, SVG and HTML still work and a PNG is a ``BackendUnavailable`` (exit 3).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..errors import BackendUnavailable, UserError
from ..files import WRITE_ERRORS, atomic_write, write_error
from ..plan import Plan
from ..source import SpecSource
from .layout import layout
from .svg import to_svg

DrawingFormat = Literal["svg", "png", "html"]
#: file extension -> format
FORMATS: dict[str, DrawingFormat] = {".svg": "svg", ".png": "png", ".html": "html"}
#: a PNG's pixels per SVG pixel: twice the SVG's size, sharp on high-density screens and when zoomed in
PNG_ZOOM = 2.0


def drawing_format(path: Path, option: str = "-o") -> DrawingFormat:
    """The format a file name asks for; a ``UserError`` naming the valid extensions otherwise."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        written = f"unknown extension {path.suffix!r}" if path.suffix else "no extension"
        raise UserError(f"{option} {path}: {written}; the extension picks the format: {', '.join(FORMATS)}")
    return found


def check_drawing_target(path: Path, option: str = "-o") -> DrawingFormat:
    """Refuse, before any work and in one line, a file that cannot be written or has no known
    format: a folder, a folder that does not exist, one this process may not write to."""
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, expected a file name ending in {', '.join(FORMATS)}")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "no such folder"
        raise UserError(f"{option} {path}: {folder}: {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write in {folder}: permission denied")
    return drawing_format(path, option)


def _html(svg: str, scene_title: str, plan: Plan) -> str:
    title = html.escape(scene_title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ margin: 16px; font-family: DejaVu Sans, Helvetica, Arial, sans-serif; color: #1f2328; }}
p {{ color: #57606a; }}
g.block:hover > rect.block, g.head:hover > rect.head {{ stroke: #0969da; stroke-width: 2.5; }}
</style>
</head>
<body>
<p>Drawn by <code>xbuild draw</code> from the plan of {html.escape(plan.name)}: hover a box for its
modules, shapes, parameters and MACs.</p>
{svg}</body>
</html>
"""


def _png(svg: str) -> bytes:
    try:
        import resvg_py
    except ImportError as exc:
        raise BackendUnavailable(f"PNG output needs the resvg-py package, which is not installed here ({exc})",
                                 hint="pip install 'xception-build[draw]', or draw to .svg or .html") from None
    return bytes(resvg_py.svg_to_bytes(svg_string=svg, zoom=PNG_ZOOM, background="#ffffff"))


def render_drawing(plan: Plan, fmt: DrawingFormat, source: SpecSource | None = None,
                   spec_file: str | None = None, overrides: Sequence[str] = ()) -> bytes:
    """The drawing of ``plan`` as the bytes of a file of format ``fmt``; ``source``, ``spec_file``
    and ``overrides``: what the spec was loaded from, for the title and the places cited."""
    scene = layout(plan, source, spec_file, overrides)
    svg = to_svg(scene)
    if fmt == "png":
        return _png(svg)
    if fmt == "html":
        return _html(svg, scene.title, plan).encode()
    return svg.encode()


def write_drawing(plan: Plan, path: Path, source: SpecSource | None = None, spec_file: str | None = None,
                  overrides: Sequence[str] = (), option: str = "-o") -> DrawingFormat:
    """Draw ``plan`` into ``path`` (format by extension); an existing file is replaced only once the
    drawing is complete, in one rename."""
    fmt = check_drawing_target(path, option)
    data = render_drawing(plan, fmt, source, spec_file, overrides)
    try:
        atomic_write(path, data)
    except OSError as exc:
        if exc.errno in WRITE_ERRORS:
            raise write_error(exc, path) from exc
        raise
    return fmt
