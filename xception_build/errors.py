"""One exception family for every error a user can cause or meet.

Library code raises these and never prints or exits; the CLI (``xception_build.cli``) is the
one place that turns them into a message and an exit code. Internal bugs are *not* ``XBuildError``
and surface as tracebacks, so the two are never confused.

Exit codes (documented in the README and in ``xbuild --help``):

====  =====================================================================
0     success
1     a numeric verification ran and failed (:class:`VerificationFailed`)
2     a user error: bad spec, bad option, bad file (:class:`UserError`)
3     a backend this command needs is missing here (:class:`BackendUnavailable`)
4     the checks ran and nothing failed, but accuracy was not judged: synthetic data (:class:`NotJudged`)
====  =====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a value came from: a file position, or the command line."""

    file: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


class XBuildError(Exception):
    """Base of every user-facing error; ``exit_code`` is what the CLI exits with."""

    exit_code = 2

    def __init__(self, message: str, *, location: Location | None = None,
                 spec_path: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.location = location
        self.spec_path = spec_path
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        """``file:line:col: spec.path: message`` plus an optional hint line."""
        prefix = ""
        if self.location is not None:
            prefix += f"{self.location}: "
        if self.spec_path:
            prefix += f"{self.spec_path}: "
        text = prefix + self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    @property
    def problems(self) -> tuple[XBuildError, ...]:
        """Each problem this error reports, printed as one ``error:`` each (see :class:`SpecErrors`)."""
        return (self,)


class UserError(XBuildError):
    """Bad input from the user: options, files, checkpoints. Exit code 2."""

    exit_code = 2


class SpecError(UserError):
    """A spec that cannot be loaded, validated or planned. Exit code 2."""


class CheckpointError(UserError):
    """A checkpoint that does not fit the compiled model. Exit code 2."""


class BackendUnavailable(XBuildError):
    """A backend (TensorRT, a GPU, onnxruntime-gpu) is missing on this machine. Exit code 3."""

    exit_code = 3


class VerificationFailed(XBuildError):
    """A numeric check ran and did not pass. Exit code 1."""

    exit_code = 1


class NotJudged(XBuildError):
    """The checks ran and nothing failed, but an artifact's accuracy was judged on nothing real
    (synthetic images): neither "verified" (0) nor "failed" (1). Exit code 4."""

    exit_code = 4


class SpecErrors(SpecError):
    """Several problems in one spec, found together (validation checks every key): each is its own
    located ``SpecError`` in ``problems``, and the CLI prints each as its own ``error:``. The
    first problem's location, path, message and hint are this error's own, so code that handles
    one ``SpecError`` keeps working. ``more`` counts problems found past those listed."""

    def __init__(self, problems: Sequence[SpecError], more: int = 0) -> None:
        if not problems:
            raise ValueError("SpecErrors needs at least one problem")
        self._problems = tuple(problems)
        self.more = max(more, 0)
        first = self._problems[0]
        super().__init__(first.message, location=first.location, spec_path=first.spec_path, hint=first.hint)

    @property
    def problems(self) -> tuple[SpecError, ...]:
        return self._problems

    def format(self) -> str:
        """Each problem's own text, one after the other (and how many more were found)."""
        text = "\n".join(problem.format() for problem in self._problems)
        return text + (f"\n  {_more(self.more)}" if self.more else "")


def _more(count: int) -> str:
    return f"({count} more problem{'s' if count > 1 else ''} in this spec, not shown)"


def error_report(exc: XBuildError) -> str:
    """What the CLI prints for an error: ``error: <problem>`` for each of its problems (hints on
    indented lines below each), so a spec with three mistakes reads as three errors."""
    lines = [f"error: {problem.format()}" for problem in exc.problems]
    if isinstance(exc, SpecErrors) and exc.more:
        lines.append(f"  {_more(exc.more)}")
    return "\n".join(lines)
