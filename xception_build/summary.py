"""The per-block summary ``xbuild compile`` prints: a table for people, JSON for machines.

Each row cites the spec line its block came from, with the file: a variant that ``extends``
another spec has blocks written in the parent file, and a line number alone would point into
the wrong file.
"""

from __future__ import annotations

from typing import Any

from .plan import Plan
from .source import SpecSource
from .tables import cite, human_count, render_table


def head_kind(pool: str, num_classes: int) -> str:
    """``avgpool+linear``; ``avgpool`` alone when there is no classifier (``num_classes: 0``); without
    pooling (``pool: none``, a backbone's feature map out) ``linear`` or ``none``."""
    parts = ([] if pool == "none" else [f"{pool}pool"]) + (["linear"] if num_classes else [])
    return "+".join(parts) or "none"


def summary_data(plan: Plan, spec_file: str | None = None, source: SpecSource | None = None) -> dict[str, Any]:
    """Everything the table shows, as plain data (stable keys: scripts read this).

    ``source`` (the loaded spec's, ``spec.source``) places the head; each block row cites the file and
    line the planner recorded (``--set ...`` as the file of an override)."""
    rows: list[dict[str, Any]] = []
    for block in plan.blocks:
        rows.append({
            "flow": block.flow, "module": block.module_name, "spec_path": block.spec_path,
            "file": block.file, "line": block.line, "repeat": list(block.repeat), "kind": block.kind,
            "input_shape": list(block.in_shape.as_tuple()), "output_shape": list(block.out_shape.as_tuple()),
            "params": block.params, "macs": block.macs,
        })
    head = plan.head
    head_at = source.locations.get(("head",)) if source is not None else None  # None: the default head
    rows.append({"flow": "head", "module": "head", "spec_path": "head",
                 "file": head_at.file if head_at else None, "line": head_at.line if head_at else None,
                 "repeat": [1, 1], "kind": head_kind(head.pool, head.num_classes),
                 "input_shape": list(plan.feature_shape.as_tuple()),
                 "output_shape": list(plan.feature_shape.as_tuple()) if head.pool == "none"
                 else [head.num_classes or head.in_features], "params": head.params,
                 "macs": head.macs})
    return {
        "name": plan.name,
        "spec_file": spec_file,
        "input_shape": list(plan.input_shape.as_tuple()),
        "feature_shape": list(plan.feature_shape.as_tuple()),
        "num_features": plan.num_features,
        "num_classes": head.num_classes,
        "total_params": plan.total_params,
        "total_macs": plan.total_macs,
        "blocks": rows,
    }


def format_table(data: dict[str, Any]) -> str:
    """Aligned text table with totals; module names are what ``model.named_modules()`` shows."""
    header = ("flow", "module", "spec", "kind", "output", "params", "MACs")
    lines: list[tuple[str, ...]] = []
    for row in data["blocks"]:
        line = row.get("line")
        cited = cite(row.get("file"), line, unknown=f"line {line}" if line else "")
        spec = row["spec_path"] + (f" ({cited})" if cited else "")
        copies = row["repeat"][1]
        if copies > 1:
            spec += f" {row['repeat'][0]}/{copies}"
        shape = "x".join(str(s) for s in row["output_shape"])
        lines.append((row["flow"], row["module"], spec, row["kind"], shape, f"{row['params']:,}",
                      human_count(row["macs"])))
    total = ("total", "", "", "", "", f"{data['total_params']:,}", human_count(data["total_macs"]))
    head, *body = render_table(header, [*lines, total], right={5, 6})
    source = f" ({data['spec_file']})" if data.get("spec_file") else ""
    title = (f"{data['name']}{source}: input {'x'.join(map(str, data['input_shape']))}, "
             f"features {'x'.join(map(str, data['feature_shape']))}")
    rule = "-" * len(head)
    return "\n".join([title, head, rule, *body[:-1], rule, body[-1]])
