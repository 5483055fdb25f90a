"""``--summary FILE``: the verification as compact GitHub-flavoured markdown, for CI job summaries.

Written for ``$GITHUB_STEP_SUMMARY`` (GitHub renders it on the run's page) and anything alike:
the verdict and its exit code, one table row per comparison, then what failed, what did not run,
the int8 statistics and where ``--explain`` found the first divergence. The file is appended to,
never replaced: that is the convention of a job summary, which every step of the job writes to.
The findings are those of the HTML report (:mod:`.report`), taken from the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exporters.verify.checks import VerificationResult
from exporters.verify.report import (
    Finding,
    ReportContext,
    failures,
    int8_comparisons,
    int8_statistics,
    metric_cells,
    not_checked,
    outcome,
)
from xception_build.errors import UserError
from xception_build.files import append_file


def markdown_summary(result: VerificationResult, context: ReportContext) -> str:
    """The summary as markdown, ending in a newline."""
    done = outcome(result)
    lines = [f"### `{context.title}`: {_text(done.verdict)}", "",
             f"**{_text(done.verdict)}** (exit {done.exit_code}): {_text(done.message)}", "",
             f"spec `{context.spec_name}`, spec hash `{context.spec_hash[:12]}`, "
             f"xception-build {_text(context.tool_version)}, {context.created:%Y-%m-%d %H:%M UTC}", ""]
    if result.comparisons:
        many = any(len(c.outputs) > 1 for c in result.comparisons)
        header = ["artifact", "backend", "inputs", "batch", *(["output"] if many else []), "precision", "error",
                  "cosine", "top1", "top5", "accuracy", "result"]
        rows = []
        for comp in result.comparisons:
            for out in comp.outputs:
                cells = metric_cells(out)
                rows.append([f"`{comp.artifact}`", comp.backend, comp.inputs, str(comp.batch),
                             *([out.name] if many else []), comp.precision, cells["error"], cells["cosine"],
                             cells["top1"], cells["top5"], cells["accuracy"], "ok" if out.passed else "**FAIL**"])
        lines += _table(header, rows, numeric=[i for i, h in enumerate(header)
                                               if h in ("batch", "error", "cosine", "top1", "top5")])
    else:
        lines.append("No comparison ran.")
    lines += _findings("Failures", failures(result))
    lines += _findings("Not checked", not_checked(result))
    lines += _findings("Notes", [Finding("note", note) for note in result.notes])
    for comp in int8_comparisons(result):
        for out in comp.outputs:
            lines += ["", f"**int8 statistics: `{comp.artifact}` on {comp.backend}, {out.name}**", ""]
            statistics = [list(row) for row in int8_statistics(out, comp.tolerance)]
            lines += _table(["statistic", "value", "bound"], statistics, numeric=[1])
    for explanation in result.explanations:
        lines += ["", f"**Block by block: `{explanation.artifact}` ({explanation.precision}, "
                      f"batch {explanation.batch})**", ""]
        lines += [f"- {_text(line)}" for line in explanation.findings()]
    return "\n".join(lines).rstrip("\n") + "\n"


def append_summary(path: Path, text: str) -> None:
    """Append the summary to ``path`` (created if missing), a blank line after what is there."""
    try:
        previous = path.stat().st_size if path.is_file() else 0
        append_file(path, (("\n" if previous else "") + text).encode("utf-8"))
    except OSError as exc:
        raise UserError(f"--summary {path}: cannot append the summary ({exc.strerror or exc})") from exc


def _findings(title: str, found: Sequence[Finding]) -> list[str]:
    if not found:
        return []
    return ["", f"**{title}**", "", *(f"- {f.kind}: {_text(f.text)}" for f in found)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> list[str]:
    rule = ["---:" if i in numeric else "---" for i in range(len(header))]
    return [_row(header), _row(rule), *(_row([_cell(c) for c in row]) for row in rows)]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(text: str) -> str:
    """A table cell: a ``|`` would end it, a newline the row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _text(text: str) -> str:
    """Running text (a reason, a file name): the characters markdown would read as code, emphasis or
    HTML are escaped (an underscore inside a word is no emphasis in GitHub's markdown)."""
    for char in "\\`*<":
        text = text.replace(char, "\\" + char)
    return text
