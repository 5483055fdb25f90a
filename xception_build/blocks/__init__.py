"""The registry of block kinds: ``kind:`` name -> :class:`~.base.BlockKind` object.

To add a kind, write one module beside this one with a ``BlockKind`` subclass (its spec model,
``plan`` and ``build``) and list its instance in :data:`BLOCK_KINDS`. Nothing else (spec, planner,
builder) changes; it may then be used in ``stem`` lists and ``blocks`` lists alike.
"""

from __future__ import annotations

from typing import Any

from .base import BlockKind, BlockPlan, BlockSpecModel, BlockTap, PlanContext, Shape
from .conv import CONV
from .xception import XCEPTION

BLOCK_KINDS: dict[str, BlockKind[Any, Any]] = {kind.name: kind for kind in (XCEPTION, CONV)}

#: the kind an entry has when it does not say ``kind:``, by where it stands in a flow
DEFAULT_KIND = {"stem": CONV.name, "blocks": XCEPTION.name}


def kind_of(spec: BlockSpecModel) -> BlockKind[Any, Any]:
    return BLOCK_KINDS[spec.kind]


__all__ = ["BLOCK_KINDS", "DEFAULT_KIND", "BlockKind", "BlockPlan", "BlockSpecModel", "BlockTap", "PlanContext",
           "Shape", "kind_of"]
