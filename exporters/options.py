"""Options shared by ``xbuild export``, ``verify`` and ``bench``: spelled and parsed one way.

``--backend`` is repeatable and takes comma-separated names alike, from the one registry
(:mod:`exporters.backends`); ``--batch`` is :func:`exporters.contract.parse_batches` everywhere;
``--tolerance NAME=VALUE`` sets one bound of the pass rule (:mod:`exporters.verify.compare`) and
is checked when parsed, before any work starts. ``--report`` and ``--summary`` are checked by
:func:`exporters.verify.report.check_report_options`, also before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from exporters.backends import parse_backend_names
from exporters.contract import BACKEND_NAMES, OPENVINO_PRECISIONS, BackendName, BatchSelection, parse_batches
from xception_build.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def _backends(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[BackendName, ...]:
    return parse_backend_names(values, option="--backend")


def _batch(ctx: click.Context, param: click.Parameter, value: str | None) -> BatchSelection | None:
    return None if value is None else parse_batches(value)


def _tolerances(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    """``NAME=VALUE`` pairs as Tolerance field names and values in their units (``accuracy-drop`` in points)."""
    from exporters.verify.compare import TOLERANCE_SPELLINGS, tolerance_bound

    bounds: dict[str, float] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--tolerance {value!r}: expected NAME=VALUE with NAME one of "
                            f"{', '.join(TOLERANCE_SPELLINGS)}")
        try:
            bound = float(number)
        except ValueError:
            raise UserError(f"--tolerance {value!r}: {number.strip()!r} is not a number") from None
        field_name, field_value = tolerance_bound(name, bound)
        bounds[field_name] = field_value
    return bounds


def backend_option(help_text: str) -> Callable[[F], F]:
    return click.option("--backend", "--backends", "backends", multiple=True, callback=_backends,
                        metavar="NAME[,NAME...]",
                        help=f"{help_text} Repeatable; comma-separated lists work too. "
                             f"Names: {', '.join(BACKEND_NAMES)}.")


def batch_option(help_text: str) -> Callable[[F], F]:
    return click.option("--batch", "batch", callback=_batch, metavar="MIN:OPT:MAX|N|N,N,...",
                        help=f"{help_text} MIN:OPT:MAX is a profile (runs MIN, OPT and MAX); N one size; "
                             "N,N,... a list of sizes.")


def explain_option(f: F) -> F:
    return click.option(
        "--explain", is_flag=True,
        help="Compare every ONNX artifact with PyTorch block by block and name the first block that "
             "leaves the tolerance (done for failed artifacts without asking).")(f)


def tolerance_option(f: F) -> F:
    return click.option(
        "--tolerance", "tolerances", multiple=True, callback=_tolerances, metavar="NAME=VALUE",
        help="Override one bound of the checked precision's pass rule (repeatable; dashes or underscores): "
             "max-error (of each sample's scale; default fp32 1e-4, fp16 2e-2), min-cosine, min-top1 (agreement "
             "on confident samples), min-top5, accuracy-drop (int8, in points; default 1), confident-margin "
             "(int8: the reference's top-1 lead, of the sample's scale, that counts as confident; default 0.5), "
             "confidence (of the int8 bounds; default 0.95). See docs/EXPORT.md.")(f)


def openvino_precision_option(help_text: str, *, default: str | None = "auto") -> Callable[[F], F]:
    """``--openvino-precision auto|f32|bf16``: OpenVINO's inference precision hint (its verdict uses
    the rule of the precision that actually ran, read back from the compiled model)."""
    return click.option("--openvino-precision", "openvino_precision", type=click.Choice(OPENVINO_PRECISIONS),
                        default=default, show_default=default is not None,
                        help=f"{help_text} auto: OpenVINO's choice (bf16 on CPUs with AMX or AVX512-BF16, "
                             "f32 elsewhere); f32: exact fp32 numerics; bf16: refused where the CPU cannot "
                             "run it.")


def report_option(help_text: str) -> Callable[[F], F]:
    return click.option("--report", type=click.Path(path_type=Path), metavar="FILE.html",
                        help=f"{help_text} Self-contained: opens offline in any browser.")


def summary_option(f: F) -> F:
    return click.option(
        "--summary", type=click.Path(path_type=Path), metavar="FILE",
        help="Append a markdown summary (verdict, comparisons, failures, int8 statistics) to FILE, whatever "
             "the verdict; for CI job summaries: --summary \"$GITHUB_STEP_SUMMARY\".")(f)
