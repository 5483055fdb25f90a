"""Options shared by ``xbuild export``, ``verify`` and ``bench``: spelled and parsed one way.

``--backend`` is repeatable and takes comma-separated names alike, from the one registry
(:mod:`exporters.backends`); ``--batch`` is :func:`exporters.contract.parse_batches` everywhere;
``--atol``/``--rtol`` are checked when parsed, before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from exporters.backends import parse_backend_names
from exporters.contract import BACKEND_NAMES, BackendName, BatchSelection, parse_batches
from xception_build.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def _backends(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[BackendName, ...]:
    return parse_backend_names(values, option="--backend")


def _batch(ctx: click.Context, param: click.Parameter, value: str | None) -> BatchSelection | None:
    return None if value is None else parse_batches(value)


def _tolerance(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise UserError(f"--{param.name} {value}: must be a finite number >= 0")
    return value


def backend_option(help_text: str) -> Callable[[F], F]:
    return click.option("--backend", "--backends", "backends", multiple=True, callback=_backends,
                        metavar="NAME[,NAME...]",
                        help=f"{help_text} Repeatable; comma-separated lists work too. "
                             f"Names: {', '.join(BACKEND_NAMES)}.")


def batch_option(help_text: str) -> Callable[[F], F]:
    return click.option("--batch", "batch", callback=_batch, metavar="MIN:OPT:MAX|N|N,N,...",
                        help=f"{help_text} MIN:OPT:MAX is a profile (runs MIN, OPT and MAX); N one size; "
                             "N,N,... a list of sizes.")


def tolerance_options(f: F) -> F:
    atol = click.option("--atol", type=float, callback=_tolerance,
                        help="Absolute tolerance of the checked precision (default: fp32 1e-4, fp16 1e-2).")
    rtol = click.option("--rtol", type=float, callback=_tolerance,
                        help="Relative tolerance of the checked precision (default: fp32 1e-3, fp16 1e-2).")
    return atol(rtol(f))
