from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py


def shipped_specs() -> list[Path]:
    return sorted(SPECS.glob("*.yaml"))


@pytest.fixture
def cifar_spec() -> Path:
    return SPECS / "xception_cifar.yaml"
