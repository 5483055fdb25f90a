"""Plan -> scene: the network as the Xception paper's Figure 5 draws it.

Three columns side by side, one per flow (entry, middle, exit), each a stack of boxes joined by
arrows that carry the feature-map size (height x width x channels, as the paper writes it). In a
box (``boxes.py`` says what it holds) the header names the spec entry, the main path's steps run
down the left, the shortcut branches off to the right and adds back in at a (+), and the
parameters and MACs close it. A flow that repeats is framed, marked ``x 8``. The stems head the
entry flow and the classifier closes the last one. All boxes share one width, so the columns
line up; the widths come from the texts, set in a monospaced font (``scene.text_width``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..plan import Plan
from ..source import SpecSource
from ..tables import human_count
from .boxes import BoxContent, Carried, Frame, Labelled, carried, flow_drawing, head_box, hwc, network_output
from .scene import BoxRole, Element, Group, Join, Line, Rect, Scene, Text, text_width

MARGIN = 28
TITLE_BAND = 118  # the title, the subtitle and the legend above the columns
COLUMN_GAP = 56
FRAME_PAD = 14  # between a repeat frame and the boxes it holds
FRAME_BAND = 52  # the top of a repeat frame: "x 8" and where the repeat is written
PAD = 12  # inside a box
HEADER = 28
STEP_HEIGHT = 26
STEP_PAD = 12  # on each side of a step's text
CONNECT = 14  # between two steps of a box
SHORTCUT_GAP = 20  # between the main path and the shortcut branch
JOIN_RADIUS = 8
FOOTER_LINE = 17
ARROW = 42  # between two boxes: room for the feature-map size
TERMINAL = 22  # the text at the top and bottom of a column


@dataclass(frozen=True)
class _Metrics:
    """Widths every box of a drawing shares, so that the columns line up."""

    main: float  # the steps of the main path
    shortcut: float  # the shortcut branch (0: no box has one)
    box: float

    @property
    def column(self) -> float:
        return self.box + 2 * FRAME_PAD

    def axis(self, column_x: float) -> float:
        """Where the main path runs, and the arrows between boxes."""
        return column_x + FRAME_PAD + PAD + self.main / 2


def _measure(boxes: Sequence[BoxContent], repeat_cites: Sequence[str]) -> _Metrics:
    steps = [s for box in boxes for s in (*box.diagram.shared, *box.diagram.main)]
    main = max(200.0, *(text_width(s, "step") + 2 * STEP_PAD for s in steps))
    branches = [b.diagram for b in boxes if b.diagram.residual != "none"]
    shortcut = 0.0
    if branches:
        lines = [line for d in branches for line in d.projection] + ["identity"]
        shortcut = max(90.0, *(text_width(line, "step") + 2 * STEP_PAD for line in lines))
    inner = main + (SHORTCUT_GAP + shortcut if shortcut else 0)
    for box in boxes:
        header = text_width(box.spec_path, "path") + (text_width(f" · {box.cite}", "cite") if box.cite else 0)
        header += text_width(f"  {box.badge}", "badge") if box.badge else 0
        inner = max(inner, header, *(text_width(line, "note") for line in box.footer))
    for text in repeat_cites:  # right of the main path's arrow, inside the frame's top band
        inner = max(inner, main / 2 + 40 + text_width(text, "repeat_cite") - FRAME_PAD)
    return _Metrics(main, shortcut, inner + 2 * PAD)


def _steps(texts: Sequence[str], role: Literal["step", "shared"], axis: float, y: float,
           width: float) -> tuple[list[Element], float]:
    """Boxes of a path, joined by arrows, from ``y`` down; returns them and where they end."""
    out: list[Element] = []
    for index, text in enumerate(texts):
        if index:
            out.append(Line(((axis, y), (axis, y + CONNECT))))
            y += CONNECT
        out.append(Rect(axis - width / 2, y, width, STEP_HEIGHT, role))
        out.append(Text(axis, y + STEP_HEIGHT / 2 + 4.5, text, role, "middle"))
        y += STEP_HEIGHT
    return out, y


def _place_box(box: BoxContent, x: float, y: float, m: _Metrics) -> tuple[Group, float]:
    """The box at (x, y) as a group, and its height."""
    axis = x + PAD + m.main / 2
    diagram = box.diagram
    header: list[Element] = [Text(x + PAD, y + 19, box.spec_path, "path")]
    if box.cite:
        header.append(Text(x + PAD + text_width(f"{box.spec_path} ", "path"), y + 19, f"· {box.cite}", "cite"))
    if box.badge:
        header.append(Text(x + m.box - PAD, y + 19.5, box.badge, "badge", "end"))
    body, cursor = _steps(diagram.shared, "shared", axis, y + HEADER + 12, m.main)
    residual = diagram.residual != "none"
    split = cursor  # where the shortcut branches off: after the shared steps
    if diagram.shared and residual:
        split = cursor + CONNECT / 2
        body.append(Line(((axis, cursor), (axis, split)), arrow=False))
        cursor = split
    if diagram.shared or residual:
        body.append(Line(((axis, cursor), (axis, cursor + CONNECT))))
        cursor += CONNECT
    main, cursor = _steps(diagram.main, "step", axis, cursor, m.main)
    body.extend(main)
    if residual:
        lines = diagram.projection
        branch = len(lines) * FOOTER_LINE + 10 if lines else 18  # the projection's box, or the label
        join = max(cursor + CONNECT + JOIN_RADIUS, split + branch + 2 * CONNECT + JOIN_RADIUS)
        side = axis + m.main / 2 + SHORTCUT_GAP + m.shortcut / 2
        top = (split + join) / 2 - branch / 2
        body.append(Line(((axis, cursor), (axis, join - JOIN_RADIUS))))
        body.append(Join(axis, join, JOIN_RADIUS))
        body.append(Line(((axis, split), (side, split), (side, top)), arrow=bool(lines)))
        if lines:
            body.append(Rect(side - m.shortcut / 2, top, m.shortcut, branch, "projection"))
            body.extend(Text(side, top + 1 + FOOTER_LINE * (i + 1), line, "shortcut", "middle")
                        for i, line in enumerate(lines))
        else:
            width = text_width("identity", "shortcut") + 12
            body.append(Rect(side - width / 2, top, width, branch, "label"))
            body.append(Text(side, top + 13.5, "identity", "shortcut", "middle"))
        body.append(Line(((side, top + branch), (side, join), (axis + JOIN_RADIUS, join))))
        body.append(Rect(axis - 3, split - 3, 6, 6, "dot"))
        cursor = join + JOIN_RADIUS
    cursor += 10
    for line in box.footer:
        body.append(Text(x + PAD, cursor + 12, line, "note"))
        cursor += FOOTER_LINE
    height = cursor + 6 - y
    outline = [Rect(x, y, m.box, height, "head" if box.role == "head" else "block"),
               Rect(x, y, m.box, HEADER, "header")]
    return Group(box.role, (*outline, *header, *body), box.data, box.tooltip), height


@dataclass
class _Column:
    """Stacks one flow's boxes from the top, with an arrow between each two."""

    x: float
    metrics: _Metrics
    y: float
    elements: list[Element]
    arrow_from: float | None = None  # the bottom of the box the next arrow starts at
    label_y: float = 0.0
    label: Carried | None = None  # what the next arrow carries

    @property
    def axis(self) -> float:
        return self.metrics.axis(self.x)

    def terminal(self, text: str) -> None:
        self._arrow_to(self.y)
        self.elements.append(Text(self.axis, self.y + 14, text, "terminal", "middle"))
        self._after(self.y + TERMINAL)

    def _after(self, bottom: float) -> None:
        self.arrow_from, self.label_y = bottom, bottom + ARROW / 2 + 4
        self.y = bottom + ARROW

    def carry(self, label: Carried) -> None:
        self.label = label

    def _arrow_to(self, top: float) -> None:
        if self.arrow_from is None or self.label is None:
            return
        line = Line(((self.axis, self.arrow_from), (self.axis, top)))
        text = Text(self.axis + 9, self.label_y, self.label.shown, "shape")
        self.elements.append(Group("edge", (line, text), (("shape", self.label.data),)))

    def box(self, box: BoxContent) -> None:
        self._arrow_to(self.y)
        group, height = _place_box(box, self.x + FRAME_PAD, self.y, self.metrics)
        self.elements.append(group)
        self._after(self.y + height)

    def framed(self, boxes: Sequence[Labelled], frame: Frame) -> None:
        """Boxes inside a repeat frame, each with the size its outgoing arrow carries; the frame
        goes under them (drawn first), the arrow into it from above its top band."""
        top, start = self.y, len(self.elements)
        self.y += FRAME_BAND
        for box, label in boxes:
            self.box(box)
            self.carry(label)
        assert self.arrow_from is not None
        bottom = self.arrow_from + FRAME_PAD
        right = self.x + self.metrics.column
        marks: list[Element] = [Rect(self.x, top, self.metrics.column, bottom - top, "repeat"),
                                Text(right - 12, top + 24, f"x {frame.repeat}", "repeat", "end")]
        if frame.place:
            marks.append(Text(right - 12, top + 42, frame.place, "repeat_cite", "end"))
        self.elements[start:start] = marks  # under the arrow into the frame and the boxes

        self.label_y = bottom + ARROW / 2 + 4
        self.y = bottom + ARROW


def _legend(boxes: Sequence[BoxContent], repeats: bool, y: float) -> tuple[list[Element], float]:
    """What the colours, the marks and the numbers on the arrows mean, for the parts this drawing
    has (``repeats``: a flow or an entry repeats); and where it ends."""
    items: list[tuple[BoxRole | None, str]] = [("step", "main path, in order")]
    if any(box.diagram.shared for box in boxes):
        items.append(("shared", "before the shortcut branches off"))
    if any(box.diagram.projection for box in boxes):
        items.append(("projection", "shortcut projection"))
    if any(box.diagram.residual != "none" for box in boxes):
        items.append((None, "(+) adds the shortcut"))
    out: list[Element] = []
    x = float(MARGIN)
    for role, text in items:
        if role is not None:
            out.append(Rect(x, y - 11, 22, 14, role))
            x += 30
        out.append(Text(x, y, text, "note"))
        x += text_width(text, "note") + 28
    if repeats:
        out.append(Text(x, y, "x N", "badge"))
        x += text_width("x N ", "badge")
        out.append(Text(x, y, "drawn once, runs N times", "note"))
        x += text_width("drawn once, runs N times", "note") + 28
    out.append(Text(x, y, "19x19x728", "shape"))
    x += text_width("19x19x728 ", "shape")
    meaning = "feature map: height x width x channels"
    out.append(Text(x, y, meaning, "note"))
    return out, x + text_width(meaning, "note")


def layout(plan: Plan, source: SpecSource | None = None, spec_file: str | None = None,
           overrides: Sequence[str] = ()) -> Scene:
    """The scene of ``plan``; ``source`` places the head, the flows' repeats and final activations,
    ``spec_file`` and the ``--set`` ``overrides`` it was loaded with are named in the title."""
    drawings = [flow_drawing(flow, source) for flow in plan.flows if flow.stem or flow.blocks]
    head = head_box(plan.head, plan.feature_shape, source)
    boxes = [box for drawing in drawings for box in drawing.boxes] + [head]
    metrics = _measure(boxes, [d.frame.place for d in drawings if d.frame])

    columns: list[Element] = []
    bottom = 0.0
    for index, drawing in enumerate(drawings):
        flow = drawing.flow
        x = MARGIN + index * (metrics.column + COLUMN_GAP)
        column = _Column(x, metrics, MARGIN + TITLE_BAND + 34, [])
        column.elements.append(Text(x + metrics.column / 2, MARGIN + TITLE_BAND + 8,
                                    f"{flow.name.capitalize()} flow", "flow", "middle"))
        column.terminal(f"from the {drawings[index - 1].flow.name} flow" if index else "input image")
        column.carry(carried((flow.stem or flow.blocks)[0].in_shape))
        for box, label in drawing.stem:
            column.box(box)
            column.carry(label)
        if drawing.frame is not None:
            column.framed(drawing.blocks, drawing.frame)
            column.carry(carried(flow.blocks[-1].out_shape))  # after the last pass
        else:
            for box, label in drawing.blocks:
                column.box(box)
                column.carry(label)
        if drawing.final_act is not None:
            column.box(drawing.final_act)
        if index == len(drawings) - 1:
            column.box(head)
            output, what = network_output(plan.head, plan.feature_shape)
            column.carry(output)
            column.terminal(what)
        else:
            column.terminal(f"to the {drawings[index + 1].flow.name} flow")
        columns.append(Group("flow", tuple(column.elements), (("flow", flow.name), ("repeat", str(flow.repeat)))))
        bottom = max(bottom, column.y - ARROW)

    named = f" · {Path(spec_file).name}" if spec_file else ""
    subtitle = (f"input {hwc(plan.input_shape)} · {plan.total_params:,} params · {human_count(plan.total_macs)} MACs"
                f" · features {hwc(plan.feature_shape)}" + "".join(f" · --set {o}" for o in overrides))
    repeats = any(d.frame for d in drawings) or any(box.badge for box in boxes)
    legend, legend_end = _legend(boxes, repeats, MARGIN + 84)
    heading: list[Element] = [Text(MARGIN, MARGIN + 24, f"{plan.name}{named}", "title"),
                              Text(MARGIN, MARGIN + 52, subtitle, "subtitle"), Group("legend", tuple(legend))]
    width = max(MARGIN * 2 + len(drawings) * metrics.column + (len(drawings) - 1) * COLUMN_GAP,
                MARGIN * 2 + text_width(subtitle, "subtitle"), legend_end + MARGIN)
    return Scene(width, bottom + MARGIN, f"{plan.name}{named}", (*heading, *columns))


__all__ = ["hwc", "layout"]
