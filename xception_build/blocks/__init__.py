"""The registry of block kinds: name -> (spec model, plan, build).

To add a kind, write one module beside this one with ``NAME``, ``SPEC_MODEL``, ``plan`` and
``build``, and list it in ``_KIND_MODULES``. Nothing else (spec, planner, builder) changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from . import conv, xception
from .base import BlockPlan, PlanContext, Shape

_KIND_MODULES: tuple[ModuleType, ...] = (xception, conv)


@dataclass(frozen=True)
class RegisteredKind:
    name: str
    spec_model: type[BaseModel]
    module: ModuleType

    def plan(self, spec: Any, options: Any, in_shape: Shape, ctx: PlanContext) -> BlockPlan:
        return self.module.plan(spec, options, in_shape, ctx)  # type: ignore[no-any-return]

    def build(self, config: Any) -> Any:
        return self.module.build(config)


BLOCK_KINDS: dict[str, RegisteredKind] = {
    module.NAME: RegisteredKind(module.NAME, module.SPEC_MODEL, module) for module in _KIND_MODULES
}


def kind_of(spec: BaseModel) -> RegisteredKind:
    return BLOCK_KINDS[spec.kind]  # type: ignore[attr-defined]


__all__ = ["BLOCK_KINDS", "BlockPlan", "PlanContext", "RegisteredKind", "Shape", "kind_of"]
