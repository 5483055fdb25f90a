"""The reference fixtures (copied from shared/reference): deterministic timm-layout weights and
float64 outputs of timm 1.0.31, so a test can prove a spec builds *the same network*.

``formula`` and ``formula_input`` are the normative definitions from the fixtures' README."""

from __future__ import annotations

import json
import math
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "reference"

# reference fixture -> shipped spec that must reproduce it
REFERENCE_SPECS = {
    "legacy_xception": "xception",
    "xception41": "xception41",
    "xception65": "xception65",
    "xception71": "xception71",
    "xception41p": "xception41p",
    "xception65p": "xception65p",
}


def hash_uniform(n: int, phase: float) -> torch.Tensor:
    s = torch.sin(torch.arange(n, dtype=torch.float64) * 12.9898 + phase) * 43758.5453
    return (s - torch.floor(s)) * 2.0 - 1.0


def formula(key: str, shape: list[int]) -> torch.Tensor:
    n = math.prod(shape) if shape else 1
    phase = (zlib.crc32(key.encode()) % 1000) / 1000.0 * 2 * math.pi
    v = hash_uniform(n, phase).reshape(shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_var":
        return 1.0 + 0.5 * v.abs()
    if leaf == "running_mean":
        return 0.1 * v
    if len(shape) == 1:
        return 1.0 + 0.1 * v if leaf == "weight" else 0.01 * v
    return v * math.sqrt(6.0 / (n // shape[0]))


def formula_input(batch: int = 2, size: int = 299) -> torch.Tensor:
    return hash_uniform(batch * 3 * size * size, 0.0).reshape(batch, 3, size, size)


@cache
def reference(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def reference_state_dict(name: str) -> dict[str, torch.Tensor]:
    return {key: formula(key, shape) for key, shape in reference(name)["state_dict"].items()}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(actual.double() - expected) / torch.linalg.vector_norm(expected))
