"""Paths of the shipped specs, importable from any test folder (unlike a conftest)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def shipped_specs() -> list[Path]:
    return sorted(SPECS.glob("*.yaml"))
