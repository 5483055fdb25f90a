"""Aligned text tables: the one renderer behind every table the commands print."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
                 right: Collection[int] = ()) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; columns in ``right`` right-aligned.

    A row with fewer cells than the header is a note: its first cells align as usual and its last
    cell runs on across the remaining columns (``tensorrt  8  unavailable: no GPU``)."""
    full = [list(header), *(list(r) for r in rows if len(r) == len(header))]
    widths = [max(len(r[i]) for r in full) for i in range(len(header))]

    def render(row: Sequence[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            last_of_note = len(row) < len(header) and i == len(row) - 1
            if last_of_note:
                cells.append(cell)
            else:
                cells.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    return [render(header), *(render(r) for r in rows)]
