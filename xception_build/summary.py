"""The per-block summary ``xbuild compile`` prints: a table for people, JSON for machines."""

from __future__ import annotations

from typing import Any

from .plan import Plan
from .tables import render_table


def _human(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


def summary_data(plan: Plan, spec_file: str | None = None) -> dict[str, Any]:
    """Everything the table shows, as plain data (stable keys: scripts read this)."""
    rows: list[dict[str, Any]] = [
        {
            "flow": block.flow, "module": block.module_name, "spec_path": block.spec_path,
            "line": block.line, "repeat": list(block.repeat), "kind": block.kind,
            "input_shape": list(block.in_shape.as_tuple()), "output_shape": list(block.out_shape.as_tuple()),
            "params": block.params, "macs": block.macs,
        }
        for block in plan.blocks
    ]
    head = plan.head
    rows.append({"flow": "head", "module": "head", "spec_path": "head", "line": None, "repeat": [1, 1],
                 "kind": f"{head.pool}pool+linear", "input_shape": list(plan.feature_shape.as_tuple()),
                 "output_shape": [head.num_classes or head.in_features], "params": head.params,
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
        spec = row["spec_path"] + (f" (line {row['line']})" if row["line"] else "")
        copies = row["repeat"][1]
        if copies > 1:
            spec += f" {row['repeat'][0]}/{copies}"
        shape = "x".join(str(s) for s in row["output_shape"])
        lines.append((row["flow"], row["module"], spec, row["kind"], shape, f"{row['params']:,}",
                      _human(row["macs"])))
    total = ("total", "", "", "", "", f"{data['total_params']:,}", _human(data["total_macs"]))
    head, *body = render_table(header, [*lines, total], right={5, 6})
    source = f" ({data['spec_file']})" if data.get("spec_file") else ""
    title = (f"{data['name']}{source}: input {'x'.join(map(str, data['input_shape']))}, "
             f"features {'x'.join(map(str, data['feature_shape']))}")
    rule = "-" * len(head)
    return "\n".join([title, head, rule, *body[:-1], rule, body[-1]])
