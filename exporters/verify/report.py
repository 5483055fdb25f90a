"""The verification as a page a person opens: ``report.html`` of ``xbuild export`` and ``verify``.

Another writer of the same :class:`~exporters.verify.checks.VerificationResult` as the text table
and :mod:`.junit`: the verdict in big coloured words with its exit code, the integrity checks,
every comparison, what failed and what did not run, the int8 statistics, and every per-block
error curve of ``--explain`` drawn as a plot. What was verified (spec, hash, versions, artifacts
with their hashes) comes from a :class:`ReportContext`, built from the export's manifest.

The page is one self-contained file that opens offline: inline CSS, the plots inline SVG written
here (text stays text, and every point carries its value in ``data-value``), no script and no URL
of any kind. :mod:`.summary` writes the same findings as markdown for CI job summaries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import NamedTuple

from exporters.manifest import Artifact, Manifest, describe
from exporters.verify.checks import VerificationResult
from exporters.verify.compare import Comparison, OutputComparison, Tolerance
from exporters.verify.explain import BlockRow, Explanation
from xception_build.errors import UserError, XBuildError
from xception_build.files import atomic_write, check_appendable_file, check_output_file

#: the report ``xbuild export`` writes into the export folder
REPORT_NAME = "report.html"
REPORT_SUFFIXES = (".html", ".htm")


@dataclass(frozen=True)
class ReportContext:
    """What was verified, for the report's header: ``title`` says which command on what."""

    title: str  # e.g. "xbuild export specs/xception.yaml -> build/"
    spec_name: str
    spec_hash: str
    artifacts: tuple[Artifact, ...]  # as the manifest records them (path, kind, precision, bytes, sha256)
    settings: tuple[tuple[str, str], ...] = ()  # (name, value): precision, batch profile, data ...
    versions: Mapping[str, str] = field(default_factory=dict)  # of the run that verified
    export_versions: Mapping[str, str] = field(default_factory=dict)  # of the export, when another run made it
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def tool_version(self) -> str:
        return self.versions.get("xception-build", "unknown")


def context_of_manifest(manifest: Manifest, title: str, versions: Mapping[str, str] | None = None) -> ReportContext:
    """The context of an export folder; ``versions`` are those of a later run that re-verifies it."""
    export, verification = manifest.export, manifest.verification
    settings = [("spec source", str(manifest.spec.source))]
    if manifest.spec.overrides:
        settings.append(("overrides", " ".join(map(str, manifest.spec.overrides))))
    settings += [("weights", str(export.get("weights_source") or "seeded init")),
                 ("precision", str(export.get("precision", "?"))),
                 ("batch profile", str(export.get("batch_profile", "?"))
                  + (" (static)" if export.get("static_batch") else "")),
                 ("batches checked", ", ".join(map(str, verification.batches))),
                 ("seed", str(verification.seed)), ("opset", str(export.get("opset", "?")))]
    if verification.data is not None:
        data = verification.data
        settings.append(("held-out images", f"{data.evaluation_images} from {data.data}"
                                            + (f" ({data.description})" if data.description else "")))
    settings.append(("reference", str(verification.reference)))
    return ReportContext(title=title, spec_name=str(manifest.spec.resolved.get("name", "?")),
                         spec_hash=manifest.spec.hash, artifacts=tuple(manifest.artifacts), settings=tuple(settings),
                         versions=dict(versions if versions is not None else manifest.versions),
                         export_versions={} if versions is None else dict(manifest.versions))


def context_of_onnx_file(onnx_file: Path, spec_file: Path, overrides: Sequence[str], weights: Path | None,
                         versions: Mapping[str, str]) -> ReportContext:
    """The context of ``xbuild verify --onnx FILE --spec SPEC``: the file checked against the spec."""
    from xception_build.spec import load_spec, spec_hash

    spec = load_spec(spec_file, overrides)
    settings = [("spec source", str(spec_file)), *((("overrides", " ".join(overrides)),) if overrides else ()),
                ("weights", str(weights) if weights is not None else "seeded init")]
    return ReportContext(title=f"xbuild verify --onnx {onnx_file} --spec {spec_file}", spec_name=spec.name,
                         spec_hash=spec_hash(spec), artifacts=(describe(onnx_file.parent, onnx_file.name, "onnx"),),
                         settings=tuple(settings), versions=dict(versions))


@dataclass(frozen=True)
class Outcome:
    """The verdict, the exit code the command ends with, and that exit's message."""

    verdict: str
    exit_code: int
    message: str


def outcome(result: VerificationResult) -> Outcome:
    """Read from :meth:`VerificationResult.raise_for_verdict`, the same call the commands exit by,
    so a verdict added there is reported with its own exit code and words."""
    try:
        result.raise_for_verdict()
    except XBuildError as exc:
        return Outcome(result.verdict, exc.exit_code, exc.message)
    return Outcome(result.verdict, 0, "verification passed")


class StatisticRow(NamedTuple):
    """One int8 statistic: its name, its value, and the bound it is judged against ("" if none)."""

    name: str
    value: str
    bound: str


def int8_statistics(output: OutputComparison, tolerance: Tolerance) -> list[StatisticRow]:
    """The statistics of one int8 output judged on held-out images: the one place the HTML report
    and the markdown summary take them from (a new statistic is a new row here). What the verdict
    rests on comes first -- the accuracy drop with its bounds, the agreement on confident images
    with its bounds, each with its outcome -- then the evidence that is reported, not judged."""
    rows = [StatisticRow("held-out images", str(output.shape[0]) if output.shape else "-", "")]
    drop = output.drop
    if drop is not None:
        rows += [StatisticRow("accuracy, PyTorch reference", _pct(output.accuracy_reference, 2), ""),
                 StatisticRow("accuracy, this artifact", _pct(output.accuracy_candidate, 2), ""),
                 StatisticRow("accuracy drop (judged)",
                              f"{100 * drop.drop:.2f} points, {_pct(drop.confidence, 0)} bounds "
                              f"{100 * drop.lower:.2f}..{100 * drop.upper:.2f} ({drop.changed} changed class: "
                              f"{drop.worse} to wrong, {drop.better} to right)",
                              f"<= {100 * drop.tolerance:g} points: {drop.outcome}"
                              + (f", about {drop.images_needed:,} images would decide" if drop.images_needed
                                 else ""))]
    elif output.accuracy_drop is None:
        rows.append(StatisticRow("accuracy", "not judged: the images have no labels", ""))
    agreement = output.agreement
    if agreement is not None:
        rows.append(StatisticRow(
            "top-1 agreement on confident images (judged)",
            f"{_pct(agreement.agreement)} of {agreement.confident} confident of {agreement.samples}"
            + (f", {_pct(agreement.confidence, 0)} bounds {_pct(agreement.lower)}..{_pct(agreement.upper)}"
               if agreement.sampled else ""),
            f">= {_pct(agreement.minimum)}: {agreement.outcome}"
            + (f", about {agreement.images_needed:,} images would decide" if agreement.images_needed else "")))
    rows += [StatisticRow("top-1 agreement, every image (evidence)", _pct(output.top1), ""),
             StatisticRow("top-5 containment of the reference's class", _pct(output.top5),
                          "" if tolerance.min_top5 is None else f">= {_pct(tolerance.min_top5)}"),
             StatisticRow("cosine similarity (mean per image)", f"{output.cosine:.6f}",
                          "" if tolerance.min_cosine is None else f">= {tolerance.min_cosine:g}")]
    return rows


def int8_comparisons(result: VerificationResult) -> list[Comparison]:
    return [c for c in result.comparisons if c.precision == "int8"]


class Finding(NamedTuple):
    """One line of the report that is not a table row: what kind (``not run``, ``note`` ...), and the text."""

    kind: str
    text: str


def failures(result: VerificationResult) -> list[Finding]:
    """Every failed integrity check and every reason a comparison failed, in the report's order."""
    found = [Finding("integrity", f"{c.path}: {c.problem}") for c in result.artifact_checks if not c.passed]
    found += [Finding("numeric", f"{c.artifact} on {c.backend}, batch {c.batch}, {o.name}: {why}")
              for c in result.comparisons for o in c.outputs for why in o.failures]
    return found


def not_checked(result: VerificationResult) -> list[Finding]:
    """What did not run and why: backends not run here (their batches together), artifacts the
    options left out, unlisted files, and selected artifacts no backend compared."""
    not_run: dict[tuple[str, str, str], list[int]] = {}
    for s in result.skipped:
        not_run.setdefault((s.artifact, s.backend, s.reason), []).append(s.batch)
    found = [Finding("not run", f"{artifact} on {backend} (batch {', '.join(map(str, batches))}): {reason}")
             for (artifact, backend, reason), batches in not_run.items()]
    found += [Finding("left out", f"{o.artifact}: {o.reason}") for o in result.left_out]
    found += [Finding("unlisted", f"{name}: looks like an artifact but the manifest does not list it; not checked")
              for name in result.unlisted]
    broken = {c.path for c in result.artifact_checks if not c.passed}
    found += [Finding("unchecked", f"{name}: " + (
        "its integrity check failed, so no numeric check ran" if name in broken
        else f"no numeric check ran: {result.no_reference}" if result.no_reference
        else "no backend here compared it with PyTorch")) for name in result.unchecked]
    return found


def check_report_options(report: Path | None, summary: Path | None) -> None:
    """Refuse, before any work, a ``--report`` that is not an HTML file name or cannot be written,
    and a ``--summary`` that cannot be appended to."""
    if report is not None:
        if report.suffix.lower() not in REPORT_SUFFIXES:
            raise UserError(f"--report {report}: the report is an HTML page; expected a file name ending in "
                            f"{' or '.join(REPORT_SUFFIXES)}, not {report.suffix or 'no extension'} (the markdown "
                            "summary is --summary FILE)")
        check_output_file(report, "--report")
    if summary is not None:
        check_appendable_file(summary, "--summary")
        if report is not None and summary.resolve() == report.resolve():
            raise UserError(f"--summary {summary}: is the --report file too; give them different names")


def write_report(path: Path, text: str, option: str = "--report") -> None:
    """Write the page atomically (a reader never sees half of it); a refused write is a UserError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode("utf-8"))
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write the report ({exc.strerror or exc})") from exc


# -- formatting shared with the summary ------------------------------------------------------------

def _pct(value: float | None, decimals: int = 1) -> str:
    return "-" if value is None else f"{value:.{decimals}%}"


def _sci(value: float) -> str:
    return f"{value:.2e}" if math.isfinite(value) else str(value)


def metric_cells(output: OutputComparison) -> dict[str, str]:
    """The figures of one comparison row, formatted as the text table formats them."""
    accuracy = "-" if output.accuracy_candidate is None else (
        f"{output.accuracy_candidate:.1%} (ref {_pct(output.accuracy_reference)})")
    return {"error": _sci(output.error), "max_abs": _sci(output.max_abs), "max_rel": _sci(output.max_rel),
            "cosine": f"{output.cosine:.7f}", "top1": _pct(output.top1), "top5": _pct(output.top5),
            "accuracy": accuracy}


def tolerance_text(tolerance: Tolerance) -> str:
    """``max_error 1e-04, min_cosine 0.9999, ...``: the bounds applied (``None``: not applied)."""
    return ", ".join(f"{name} {value:g}" for name, value in tolerance.to_dict().items() if value is not None)


# -- the HTML page ----------------------------------------------------------------------------------

#: the plot's series colours; used nowhere else on the page, so a screenshot can find the plot
ERROR_COLOR, COSINE_COLOR, DIVERGENCE_COLOR = "#1f6feb", "#bf5af2", "#d1242f"

_CSS = """
* { box-sizing: border-box }
body { margin: 0; background: #eef1f4; color: #1f2328;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 40px; background: #fff; min-height: 100vh }
h1 { font-size: 20px; margin: 0; font-weight: 600 }
h2 { font-size: 16px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de }
h3 { font-size: 14px; margin: 18px 0 6px }
.subject { margin: 2px 0 14px; color: #59636e; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
           font-size: 13px }
.banner { display: flex; align-items: center; gap: 28px; padding: 14px 20px; border-radius: 8px;
          border: 1px solid #d4a72c; background: #fff8c5 }
.banner.passed { border-color: #4ac26b; background: #dafbe1 }
.banner.failed { border-color: #ff8182; background: #ffebe9 }
.verdict { font-size: 44px; font-weight: 800; line-height: 1.1; color: #7d4e00; text-transform: uppercase;
           letter-spacing: 1px; white-space: nowrap }
.passed .verdict { color: #116329 }
.failed .verdict { color: #a40e26 }
.exit { font-size: 15px }
.exit b { font-size: 17px }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; text-align: left; vertical-align: top }
th { background: #f6f8fa; font-weight: 600 }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap }
table.meta { margin-top: 14px }
table.meta th { width: 150px }
tr.fail td { background: #ffebe9 }
table.comparisons { font-size: 12px }
table.comparisons td:nth-child(-n+3) { white-space: nowrap }
td.ok { color: #116329; font-weight: 600 }
td.bad { color: #a40e26; font-weight: 700 }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
              font-size: 12px }
ul.findings { margin: 4px 0; padding-left: 0; list-style: none }
ul.findings li { margin: 3px 0; padding: 3px 8px; border-left: 3px solid #d0d7de; background: #f6f8fa }
ul.findings li.failure { border-left-color: #cf222e; background: #fff5f5 }
.kind { display: inline-block; min-width: 76px; color: #59636e; font-size: 12px; font-weight: 600 }
.curve-block { margin: 8px 0 22px }
svg.curve { display: block; width: 100%; height: auto; border: 1px solid #d0d7de; border-radius: 6px;
            background: #fff; font-family: system-ui, "DejaVu Sans", sans-serif }
details summary { cursor: pointer; color: #0b4f9c; margin: 6px 0 }
.muted { color: #59636e }
footer { margin-top: 32px; color: #59636e; font-size: 12px }
"""


def html_report(result: VerificationResult, context: ReportContext) -> str:
    """The whole page: one self-contained HTML document (no script, no URL)."""
    done = outcome(result)
    slug = re.sub(r"[^a-z0-9]+", "-", done.verdict.lower()).strip("-")
    meta = [("spec", f"<b>{escape(context.spec_name)}</b>"),
            ("spec hash", f"<code>{escape(context.spec_hash)}</code>"),
            ("xception-build", escape(context.tool_version)),
            ("written", escape(context.created.strftime("%Y-%m-%d %H:%M:%S UTC"))),
            *((escape(name), escape(value)) for name, value in context.settings)]
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(done.verdict)}: {escape(context.spec_name)} - xbuild verification report</title>",
        f"<style>{_CSS}</style>", "</head>", "<body>", "<main>",
        "<header>", "<h1>xbuild verification report</h1>", f'<p class="subject">{escape(context.title)}</p>',
        f'<div class="banner {slug}"><div class="verdict" id="verdict" data-verdict="{escape(done.verdict)}" '
        f'data-exit-code="{done.exit_code}">{escape(done.verdict)}</div>'
        f'<div class="exit"><b>exit {done.exit_code}</b><br>{escape(done.message)}</div></div>',
        _fields(meta, css="meta"), "</header>",
    ]
    found = failures(result)
    if found:
        parts += ['<section id="failures">', "<h2>Failures</h2>", _findings(found, css="failure"), "</section>"]
    if result.artifact_checks:
        parts += ['<section id="integrity">', "<h2>Integrity of the listed files</h2>", _integrity_table(result),
                  "</section>"]
    parts += ['<section id="comparisons">', "<h2>Comparisons with the PyTorch reference</h2>",
              _comparison_table(result.comparisons) if result.comparisons
              else '<p class="muted">No comparison ran.</p>', "</section>"]
    unchecked = not_checked(result)
    if unchecked:
        parts += ['<section id="not-checked">', "<h2>Not run, left out, not checked</h2>", _findings(unchecked),
                  "</section>"]
    if result.notes:
        parts += ['<section id="notes">', "<h2>Notes</h2>", _findings([Finding("note", n) for n in result.notes]),
                  "</section>"]
    int8 = int8_comparisons(result)
    if int8:
        parts += ['<section id="int8">', "<h2>int8 statistics on the held-out images</h2>"]
        for comp in int8:
            for out in comp.outputs:
                parts += [f"<h3>{escape(comp.artifact)} on {escape(comp.backend)}, {escape(out.name)}: "
                          f"{'ok' if out.passed else 'FAIL'}</h3>",
                          _table(("statistic", "value", "bound"),
                                 [[escape(cell) for cell in row] for row in int8_statistics(out, comp.tolerance)],
                                 css="int8", numeric=(1,))]
        parts.append("</section>")
    if result.explanations:
        parts += ['<section id="explain">', "<h2>Block by block: the error through the network</h2>",
                  '<p class="muted">Each block\'s output against the reference\'s on the same inputs, in forward '
                  "order (the last point is the classifier's output). Dashed: the tolerance; a point above it "
                  "leaves it. Hover a point for its block, spec line and figures.</p>"]
        parts += [_explanation(e) for e in result.explanations]
        parts.append("</section>")
    parts += _context_sections(context)
    parts += [f"<footer>Written by xception-build {escape(context.tool_version)} from the same verification as "
              "the command's table. Self-contained: no scripts, nothing fetched.</footer>",
              "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, css: str = "",
           numeric: Sequence[int] = (), row_attributes: Sequence[str] | None = None) -> str:
    """A table whose cells are already HTML; ``numeric`` columns are right-aligned."""
    lines = [f'<table class="{css}">', "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>"]
    for index, row in enumerate(rows):
        attributes = f" {row_attributes[index]}" if row_attributes is not None else ""
        cells = "".join(f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
                        for i, cell in enumerate(row))
        lines.append(f"<tr{attributes}>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _fields(rows: Sequence[tuple[str, str]], css: str) -> str:
    """A two-column table of names (already HTML) and values (already HTML)."""
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="{css}">{body}</table>'


def _findings(found: Sequence[Finding], css: str = "") -> str:
    items = "".join(f'<li class="{css}"><span class="kind">{escape(f.kind)}</span> {escape(f.text)}</li>'
                    for f in found)
    return f'<ul class="findings">{items}</ul>'


def _result_cell(passed: bool) -> str:
    return '<td class="ok">ok</td>' if passed else '<td class="bad">FAIL</td>'


def _integrity_table(result: VerificationResult) -> str:
    lines = ['<table class="integrity">', "<tr><th>file</th><th>result</th></tr>"]
    for check in result.artifact_checks:
        text = "ok" if check.passed else f"FAIL: {check.problem}"
        css = "ok" if check.passed else "bad"
        lines.append(f'<tr class="integrity{"" if check.passed else " fail"}" data-path="{escape(check.path)}" '
                     f'data-result="{"ok" if check.passed else "FAIL"}"><td><code>{escape(check.path)}</code></td>'
                     f'<td class="{css}">{escape(text)}</td></tr>')
    lines.append("</table>")
    return "\n".join(lines)


_COMPARISON_HEADER = ("artifact", "backend", "inputs", "batch", "output", "precision", "error", "max_abs", "max_rel",
                      "cosine", "top1", "top5", "accuracy", "result")


def _comparison_table(comparisons: Sequence[Comparison]) -> str:
    """One row per (artifact, backend, batch, output), as in the text table; each row's keys are
    also data attributes, so a reader (or a test) finds a row without parsing its cells."""
    lines = ['<table class="comparisons">', "<tr>" + "".join(f"<th>{h}</th>" for h in _COMPARISON_HEADER) + "</tr>"]
    for comp in comparisons:
        for out in comp.outputs:
            cells = metric_cells(out)
            keys = {"artifact": comp.artifact, "backend": comp.backend, "batch": str(comp.batch),
                    "inputs": comp.inputs, "output": out.name, "result": "ok" if out.passed else "FAIL"}
            attributes = " ".join(f'data-{k}="{escape(v)}"' for k, v in keys.items())
            tolerance = escape(tolerance_text(comp.tolerance))
            row = [f"<td><code>{escape(comp.artifact)}</code></td>", f"<td>{escape(comp.backend)}</td>",
                   f"<td>{escape(comp.inputs)}</td>", f'<td class="num">{comp.batch}</td>',
                   f"<td>{escape(out.name)}</td>", f'<td title="{tolerance}">{escape(comp.precision)}</td>',
                   *(f'<td class="num">{escape(cells[name])}</td>' for name in _COMPARISON_HEADER[6:13]),
                   _result_cell(out.passed)]
            lines.append(f'<tr class="comparison{"" if out.passed else " fail"}" {attributes}>{"".join(row)}</tr>')
    lines.append("</table>")
    tolerances = {(c.precision, tolerance_text(c.tolerance)) for c in comparisons}
    lines.append('<p class="muted">Tolerances: ' + "; ".join(
        f"{escape(precision)}: {escape(text)}" for precision, text in sorted(tolerances)) + "</p>")
    return "\n".join(lines)


def _explanation(explanation: Explanation) -> str:
    first = explanation.first_divergence
    rows = [[f"<code>{escape(r.module)}</code>", escape(r.spec_path), f"{r.repeat[0]}/{r.repeat[1]}",
             "-" if r.line is None else str(r.line), escape(_sci(r.error)), f"{r.cosine:.7f}", f"{r.peak:.3g}",
             "ok" if r.passed else "FAIL" if r.finite else "NON-FINITE"] for r in explanation.rows]
    attributes = [f'class="{"block" if r.passed else "block fail"}" data-block="{escape(r.module)}"'
                  for r in explanation.rows]
    table = _table(("block", "spec", "repeat", "line", "error", "cosine", "peak", "result"), rows, css="blocks",
                   numeric=(3, 4, 5, 6), row_attributes=attributes)
    return "\n".join([
        f'<div class="curve-block" data-artifact="{escape(explanation.artifact)}">',
        f"<h3>{escape(explanation.artifact)} ({escape(explanation.precision)}, batch {explanation.batch}): "
        + ("first divergence at <code>" + escape(first.module) + "</code>" if first is not None
           else f"every block within the {escape(explanation.precision)} tolerance") + "</h3>",
        _findings([Finding("finding", line) for line in explanation.findings()]),
        error_curve_svg(explanation),
        f"<details><summary>the curve as a table ({len(explanation.rows)} rows)</summary>{table}</details>",
        "</div>"])


def _context_sections(context: ReportContext) -> list[str]:
    artifacts = [[f"<code>{escape(a.path)}</code>", escape(a.kind), escape(a.precision or "-"), f"{a.bytes:,}",
                  f'<code>{escape(a.sha256)}</code>'] for a in context.artifacts]
    parts = ['<section id="artifacts">', "<h2>Artifacts</h2>",
             _table(("file", "kind", "precision", "bytes", "sha256"), artifacts, css="artifacts", numeric=(3,)),
             "</section>"]
    names = list(dict.fromkeys([*context.versions, *context.export_versions]))
    if context.export_versions:
        rows = [[escape(n), escape(context.export_versions.get(n, "-")), escape(context.versions.get(n, "-"))
                 + (" <b>(differs)</b>" if context.export_versions.get(n) != context.versions.get(n) else "")]
                for n in names]
        versions = _table(("library", "at export", "this verification"), rows, css="versions")
    else:
        versions = _table(("library", "version"), [[escape(n), escape(context.versions[n])] for n in names],
                          css="versions")
    parts += ['<section id="versions">', "<h2>Versions</h2>", versions, "</section>"]
    return parts


# -- the per-block error curve as an inline SVG plot -------------------------------------------------

_WIDTH, _LEFT, _RIGHT, _TOP, _PLOT_HEIGHT, _BOTTOM = 1100, 70, 140, 40, 290, 104  # _RIGHT: the bounds' labels
_INF_BAND = 22  # px above the log axis where non-finite values are drawn


class _Series(NamedTuple):
    key: str  # data-series
    label: str
    color: str
    values: list[float]  # one per row; inf: non-finite
    bound: float | None  # the tolerance on this quantity, if one applies


def _curve_series(explanation: Explanation) -> list[_Series]:
    tol = explanation.tolerance
    rows = explanation.rows
    return [
        _Series("error", "scale-relative error (worst sample)", ERROR_COLOR,
                [r.error if r.finite else math.inf for r in rows], tol.max_error),
        _Series("1-cosine", "1 - cosine (mean per sample)", COSINE_COLOR,
                [1.0 - r.cosine if r.finite else math.inf for r in rows],
                1.0 - tol.min_cosine if tol.min_cosine is not None and tol.min_cosine > 0 else None),
    ]


def error_curve_svg(explanation: Explanation) -> str:
    """The per-block curve: x the blocks in forward order (labelled by module), y log10 of the
    scale-relative error and of 1 - cosine, each tolerance dashed, the first divergence marked.

    Every point is a ``<circle>`` with ``data-series``, ``data-block`` and ``data-value`` (the
    exact value, ``inf`` for a non-finite block); values <= 0 sit on the axis floor, hollow."""
    rows = explanation.rows
    series = _curve_series(explanation)
    positive = [v for s in series for v in [*s.values, s.bound] if v is not None and math.isfinite(v) and v > 0]
    low = math.floor(math.log10(min(positive))) if positive else -8
    high = math.ceil(math.log10(max(positive))) if positive else 0
    high = max(high, low + 1)
    plot_top, plot_bottom = _TOP + _INF_BAND, _TOP + _PLOT_HEIGHT
    plot_width = _WIDTH - _LEFT - _RIGHT
    height = _TOP + _PLOT_HEIGHT + _BOTTOM

    def x_of(index: int) -> float:
        return _LEFT + (index + 0.5) * plot_width / max(len(rows), 1)

    def y_of(value: float) -> float:
        if not math.isfinite(value):
            return float(_TOP + _INF_BAND / 2)
        if value <= 0:
            return float(plot_bottom)
        share = (math.log10(value) - low) / (high - low)
        return plot_bottom - share * (plot_bottom - plot_top)

    first = explanation.first_divergence
    title = (f"{explanation.artifact} ({explanation.precision}, batch {explanation.batch}): per-block error, "
             + (f"first divergence at {first.module}" if first is not None else "no block leaves the tolerance"))
    out = [f'<svg class="curve" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" role="img" '
           f'data-artifact="{escape(explanation.artifact)}" data-low="{low}" data-high="{high}" '
           f'data-first-divergence="{escape(first.module) if first is not None else ""}">',
           f"<title>{escape(title)}</title>",
           f'<rect x="{_LEFT}" y="{plot_top}" width="{plot_width}" height="{plot_bottom - plot_top}" '
           'fill="#fbfcfd" stroke="#d0d7de"/>']
    step = 1 if high - low <= 10 else 2
    for exponent in range(high, low - 1, -step):  # decade grid and labels, from the top one down
        y = y_of(10.0 ** exponent)
        out.append(f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ed"/>')
        out.append(f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="#59636e">'
                   f"1e{exponent}</text>")
    out.append(f'<text transform="translate(16 {(plot_top + plot_bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" '
               'font-size="12" fill="#59636e">relative to the reference (log scale)</text>')
    if any(math.isinf(v) for s in series for v in s.values):
        out.append(f'<text x="{_LEFT - 8}" y="{_TOP + _INF_BAND / 2 + 4:.1f}" text-anchor="end" font-size="11" '
                   f'fill="{DIVERGENCE_COLOR}">non-finite</text>')
    for index, row in enumerate(rows):  # block labels, rotated to fit thirty and more
        x = x_of(index)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_bottom}" y2="{plot_bottom + 4}" stroke="#8c959f"/>')
        weight = ' font-weight="700"' if first is not None and row.module == first.module else ""
        out.append(f'<text class="block-label" transform="translate({x + 4:.1f} {plot_bottom + 12}) rotate(-40)" '
                   f'text-anchor="end" font-size="11" fill="#1f2328"{weight}>{escape(row.module)}</text>')
    labelled: list[float] = []
    for s in series:  # tolerances, dashed, labelled right of the plot (a second label near a first goes below)
        if s.bound is None:
            continue
        y = y_of(s.bound)
        out.append(f'<line class="bound" data-series="{s.key}" data-value="{s.bound!r}" x1="{_LEFT}" '
                   f'x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{s.color}" stroke-width="1.5" '
                   'stroke-dasharray="7 5" opacity="0.8"/>')
        name = "max_error" if s.key == "error" else "1 - min_cosine"
        label_y = y + 16 if any(abs(y - other) < 14 for other in labelled) else y + 4
        labelled.append(y)
        out.append(f'<text x="{_WIDTH - _RIGHT + 6}" y="{label_y:.1f}" font-size="11" fill="{s.color}">'
                   f"{name} {s.bound:.3g}</text>")
    if first is not None:
        x = x_of(rows.index(first))
        anchor = "end" if x > _WIDTH * 0.7 else "start"
        shift = -6 if anchor == "end" else 6
        out.append(f'<line class="divergence" data-block="{escape(first.module)}" x1="{x:.1f}" x2="{x:.1f}" '
                   f'y1="{_TOP}" y2="{plot_bottom}" stroke="{DIVERGENCE_COLOR}" stroke-width="2" '
                   'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x + shift:.1f}" y="{_TOP + 10}" text-anchor="{anchor}" font-size="12" '
                   f'font-weight="700" fill="{DIVERGENCE_COLOR}">first divergence: {escape(first.module)}</text>')
    for s in series:  # the curves, then their points on top
        points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(s.values))
        out.append(f'<polyline class="series" data-series="{s.key}" points="{points}" fill="none" '
                   f'stroke="{s.color}" stroke-width="2.5" stroke-linejoin="round"/>')
    for s in series:
        for index, (row, value) in enumerate(zip(rows, s.values, strict=True)):
            fill = "#ffffff" if value <= 0 else s.color
            ring = DIVERGENCE_COLOR if not row.passed else s.color
            out.append(f'<circle class="point" data-series="{s.key}" data-block="{escape(row.module)}" '
                       f'data-value="{value!r}" cx="{x_of(index):.1f}" cy="{y_of(value):.1f}" r="4" fill="{fill}" '
                       f'stroke="{ring}" stroke-width="{2 if not row.passed else 1.5}">'
                       f"<title>{escape(_point_title(row, s, value))}</title></circle>")
    legend_x = _LEFT
    for s in series:
        out.append(f'<line x1="{legend_x}" x2="{legend_x + 26}" y1="18" y2="18" stroke="{s.color}" '
                   'stroke-width="2.5"/>')
        out.append(f'<text x="{legend_x + 32}" y="22" font-size="12" fill="#1f2328">{escape(s.label)}</text>')
        legend_x += 40 + 7 * len(s.label)
    out.append(f'<line x1="{legend_x}" x2="{legend_x + 26}" y1="18" y2="18" stroke="#59636e" stroke-width="1.5" '
               'stroke-dasharray="7 5"/>')
    out.append(f'<text x="{legend_x + 32}" y="22" font-size="12" fill="#1f2328">tolerance</text>')
    out.append("</svg>")
    return "\n".join(out)


def _point_title(row: BlockRow, series: _Series, value: float) -> str:
    figure = "non-finite" if math.isinf(value) else "0 (exact)" if value <= 0 else f"{value:.3g}"
    verdict = "ok" if row.passed else "FAIL"
    return f"{row.where()}: {series.label} {figure}; cosine {row.cosine:.7f}, peak {row.peak:.3g}; {verdict}"
