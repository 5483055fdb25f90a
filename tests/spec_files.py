"""Paths of the shipped specs, importable from any test folder (unlike a conftest)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def shipped_specs() -> list[Path]:
    return sorted(SPECS.glob("*.yaml"))


def line_of(spec: Path, text: str) -> int:
    """The 1-based number of the first line of ``spec`` that contains ``text``, so that tests
    about cited lines follow edits of the shipped specs."""
    for number, line in enumerate(spec.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{spec.name} has no line containing {text!r}")
