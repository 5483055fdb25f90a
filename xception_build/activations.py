"""The activation table: every activation a spec may name, in one place.

The spec's types (``ActivationName``, the layout tokens), the valid choices in error messages and
the modules the builder makes are all derived from :data:`ACTIVATIONS`; adding an activation is
one row here. torch is not imported: the spec and the planner use this table without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

#: What a spec may write for ``activation`` (and as a layout token), besides ``none``.
ActivationName = Literal["relu", "relu6", "elu", "gelu", "silu"]
#: ``activation:`` in a spec: a name, or ``none`` (nothing is inserted).
ActivationSetting = Literal[ActivationName, "none"]


@dataclass(frozen=True)
class Activation:
    """How the builder makes an activation: the ``torch.nn`` class, and whether it can run in place."""

    module: str
    has_inplace: bool


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("ReLU", has_inplace=True),
    "relu6": Activation("ReLU6", has_inplace=True),
    "elu": Activation("ELU", has_inplace=True),
    "gelu": Activation("GELU", has_inplace=False),
    "silu": Activation("SiLU", has_inplace=True),
}

# The Literal above is what pydantic validates and mypy checks; the table is what the builder
# reads. They are written side by side and must list the same names.
if set(ACTIVATIONS) != set(get_args(ActivationName)):  # pragma: no cover - a broken edit of this file
    raise ImportError("xception_build.activations: ACTIVATIONS and ActivationName list different names")
