"""``xbuild draw``: a picture of the network, laid out from its plan as the Xception paper draws it.

``layout`` turns a plan into a scene of positioned boxes, text and arrows; ``svg`` writes that
scene as SVG; ``formats`` wraps it into HTML or rasterizes it into PNG and writes the file. Like
every spec command it needs the plan only, never torch.
"""

from __future__ import annotations

from .formats import FORMATS, DrawingFormat, check_drawing_target, render_drawing, write_drawing

__all__ = ["FORMATS", "DrawingFormat", "check_drawing_target", "render_drawing", "write_drawing"]
