"""xception-build: declarative Xception-family networks, compiled from YAML specs.

Pipeline (one module per stage): ``source`` (YAML -> data with positions) -> ``spec``
(validated, immutable) -> ``plan`` (shapes, parameters, MACs) -> ``builder``/``model``
(``nn.Module``) -> ``weights`` (checkpoints). Exporters live in the separate ``exporters``
package, which depends on this one and never the reverse.

The public names load on first use (a module ``__getattr__``), so that importing the package,
and every spec command of ``xbuild`` (validate, list, schema, diff, compile without ``--out``),
never imports torch: torch takes over a second to import, a spec takes milliseconds to check.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import XBuildError

if TYPE_CHECKING:
    from .builder import build_model
    from .model import XceptionNet
    from .plan import Plan, plan_spec
    from .spec import Spec, load_spec

# public name -> the module that defines it
_LAZY = {
    "build_model": "builder",
    "XceptionNet": "model",
    "Plan": "plan",
    "plan_spec": "plan",
    "Spec": "spec",
    "load_spec": "spec",
}

__all__ = ["Plan", "Spec", "XBuildError", "XceptionNet", "build_model", "load_spec", "plan_spec"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
