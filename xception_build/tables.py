"""Aligned text tables: the one renderer behind every table the commands print."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

_UNITS = (("G", 1e9), ("M", 1e6), ("K", 1e3))


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


def human_count(count: int, *, signed: bool = False) -> str:
    """``8.36G``, ``728``; ``signed``: a change, ``+1.20G``, ``-3,072``, ``0``."""
    for unit, size in _UNITS:
        if abs(count) >= size:
            return f"{count / size:+.2f}{unit}" if signed else f"{count / size:.2f}{unit}"
    if signed:
        return f"{count:+,}" if count else "0"
    return str(count)


def cite(file: str | None, line: int | None, *, unknown: str) -> str:
    """Where a spec entry is written, for a table cell: ``xception41.yaml:40``; ``--set`` for a
    value the command line wrote; ``unknown`` where the file is not known."""
    if file is None:
        return unknown
    if file.startswith("--set "):
        return "--set"
    return f"{Path(file).name}:{line}" if line else Path(file).name
