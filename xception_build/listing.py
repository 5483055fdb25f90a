"""``xbuild list``: the shipped specs with their parameters and MACs, as timm's ``list_models``
shows what can be built by name. Planning needs no torch, so the listing is quick."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Any

from .catalog import SHIPPED_DIR, shipped_specs
from .errors import UserError
from .plan import plan_spec
from .spec import load_spec
from .tables import render_table


@dataclass(frozen=True)
class ShippedSpec:
    """One row of the listing (its JSON keys too)."""

    name: str
    file: str
    description: str
    input_size: list[int]  # [channels, height, width]
    num_classes: int
    params: int
    macs: int


def list_shipped(pattern: str | None = None) -> list[ShippedSpec]:
    """Every shipped spec whose name matches ``pattern`` (shell wildcards: ``xception6*``), planned."""
    specs = shipped_specs()
    names = [name for name in specs if pattern is None or fnmatch.fnmatchcase(name, pattern)]
    if not names:
        raise UserError(f"no shipped spec matches '{pattern}'",
                        hint=f"shipped specs: {', '.join(specs) or f'none (nothing in {SHIPPED_DIR})'}")
    rows = []
    for name in names:
        spec = load_spec(specs[name])
        plan = plan_spec(spec)
        rows.append(ShippedSpec(name, str(specs[name]), spec.description, list(plan.input_shape.as_tuple()),
                                spec.head.num_classes, plan.total_params, plan.total_macs))
    return rows


def listing_data(rows: list[ShippedSpec]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def format_listing(rows: list[ShippedSpec], width: int = 72) -> str:
    """name, input, classes, parameters, GMACs and the description (cut to ``width``)."""
    header = ("name", "input", "classes", "params", "GMACs", "description")
    body = [(row.name, "x".join(map(str, row.input_size[1:])), str(row.num_classes), f"{row.params:,}",
             f"{row.macs / 1e9:.2f}", row.description if len(row.description) <= width
             else row.description[: width - 3] + "...") for row in rows]
    return "\n".join(render_table(header, body, right={2, 3, 4}))
