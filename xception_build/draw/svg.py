"""Scene -> SVG text: plain SVG 1.1 that browsers, editors and rasterizers read alike.

Styles are written as presentation attributes on each element (no CSS, no scripts, no external
references), so the file looks the same everywhere and a PNG made from it matches it. Text stays
``<text>``: searchable, selectable, and readable back by a script.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from .scene import TEXT_STYLES, BoxRole, Element, Group, Join, Line, Rect, Scene, Text

STROKE = "#57606a"


@dataclass(frozen=True)
class BoxStyle:
    fill: str
    stroke: str = STROKE
    stroke_width: float = 1.0
    radius: float = 4.0
    dashed: bool = False


BOX_STYLES: dict[BoxRole, BoxStyle] = {
    "block": BoxStyle("#ffffff", "#8c959f", 1.2, 6),
    "head": BoxStyle("#ffffff", "#8c959f", 1.2, 6),
    "header": BoxStyle("#eaeef2", "#8c959f", 1.2, 6),
    "step": BoxStyle("#ddf4ff", "#54aeff"),
    "shared": BoxStyle("#fff8c5", "#d4a72c"),
    "projection": BoxStyle("#ffebe9", "#ff8182"),
    "label": BoxStyle("#ffffff", "#d0d7de", 1.0, 3),
    "dot": BoxStyle(STROKE, STROKE, 0, 3),
    "repeat": BoxStyle("#fbefff", "#c297ff", 1.6, 10, dashed=True),
}


def _attrs(**values: object) -> str:
    return "".join(f" {name.rstrip('_').replace('_', '-')}={quoteattr(_number(value))}"
                   for name, value in values.items() if value is not None)


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return str(value)


def _rect(rect: Rect) -> str:
    style = BOX_STYLES[rect.role]
    place = _attrs(class_=rect.role, x=rect.x, y=rect.y, width=rect.width, height=rect.height, rx=style.radius)
    paint = _attrs(fill=style.fill, stroke=style.stroke, stroke_width=style.stroke_width,
                   stroke_dasharray="7 5" if style.dashed else None)
    return f"<rect{place}{paint}/>"


def _text(text: Text) -> str:
    style = TEXT_STYLES[text.role]
    attrs = _attrs(class_=text.role, x=text.x, y=text.y, font_family=style.family, font_size=style.size,
                   fill=style.fill, text_anchor=None if text.anchor == "start" else text.anchor,
                   font_weight="bold" if style.bold else None, font_style="italic" if style.italic else None)
    return f"<text{attrs}>{escape(text.text)}</text>"


def _line(line: Line) -> str:
    points = " ".join(f"{_number(float(x))},{_number(float(y))}" for x, y in line.points)
    return (f"<polyline{_attrs(points=points, fill='none', stroke=STROKE, stroke_width=1.4)}"
            f"{_attrs(marker_end='url(#arrow)' if line.arrow else None)}/>")


def _join(join: Join) -> str:
    x, y, r = _number(join.x), _number(join.y), join.radius - 3
    plus = f"M{_number(join.x - r)},{y}h{_number(2 * r)}M{x},{_number(join.y - r)}v{_number(2 * r)}"
    circle = _attrs(cx=join.x, cy=join.y, r=join.radius, fill="#ffffff", stroke=STROKE, stroke_width=1.4)
    return f'<g class="join"><circle{circle}/><path{_attrs(d=plus, stroke=STROKE, stroke_width=1.6)}/></g>'


def _group(group: Group) -> list[str]:
    data = "".join(f" data-{key}={quoteattr(value)}" for key, value in group.data)
    lines = [f"<g class={quoteattr(group.role)}{data}>"]
    if group.tooltip:
        lines.append(f"<title>{escape(group.tooltip)}</title>")
    for child in group.children:
        lines.extend(_element(child))
    lines.append("</g>")
    return lines


def _element(element: Element) -> list[str]:
    if isinstance(element, Group):
        return _group(element)
    if isinstance(element, Rect):
        return [_rect(element)]
    if isinstance(element, Text):
        return [_text(element)]
    if isinstance(element, Line):
        return [_line(element)]
    return [_join(element)]


ARROW_MARKER = ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
                f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{STROKE}"/></marker></defs>')


def to_svg(scene: Scene) -> str:
    """The SVG document of ``scene`` (without an XML declaration, so it also goes inline in HTML)."""
    width, height = round(scene.width), round(scene.height)
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f"<title>{escape(scene.title)}</title>",
             ARROW_MARKER,
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    for element in scene.children:
        lines.extend(_element(element))
    lines.append("</svg>")
    return "\n".join(lines) + "\n"
