"""The export report: ``report.html`` (and ``--report FILE``) and the markdown ``--summary FILE``.

Read back as a user's browser and CI would: the verdict, every comparison row, the plotted
per-block curve against the numbers ``--json`` prints for the same run, the file self-contained,
and a headless Chromium screenshot that shows the plot.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from tampering import drift_block

from exporters.verify.compare import DEFAULT_TOLERANCES
from exporters.verify.explain import BlockRow, Explanation
from exporters.verify.report import COSINE_COLOR, DIVERGENCE_COLOR, ERROR_COLOR, error_curve_svg

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "specs" / "xception_cifar.yaml"
CIFAR_BATCH = "1:2:4"  # the cifar_export fixture's profile
Element = tuple[str, dict[str, str]]


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of each element with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self.texts: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attributes))
        if tag not in ("meta", "br", "circle", "line", "rect", "polyline"):
            self._open.append(attributes.get("id"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for name in self._open:
            if name:
                self.texts[name] = self.texts.get(name, "") + data


def parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    return parser


def tagged(page: _Elements, tag: str, css: str) -> list[dict[str, str]]:
    return [a for t, a in page.elements if t == tag and css in a.get("class", "").split()]


def assert_self_contained(text: str) -> None:
    """Nothing a browser would fetch: no URL, no script, no stylesheet or image link, no CSS import."""
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    for tag, attributes in parse(text).elements:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed", "base"), tag
        assert not {"src", "href", "xlink:href", "action", "srcset"} & set(attributes), (tag, attributes)


def verdict_of(page: _Elements) -> tuple[str, str, str]:
    element = next(a for t, a in page.elements if a.get("id") == "verdict")
    return element["data-verdict"], element["data-exit-code"], page.texts["verdict"]


def rows_of(page: _Elements) -> set[tuple[str, str, int]]:
    return {(a["data-artifact"], a["data-backend"], int(a["data-batch"])) for a in tagged(page, "tr", "comparison")}


def points(page: _Elements, series: str) -> dict[str, dict[str, str]]:
    return {a["data-block"]: a for a in tagged(page, "circle", "point") if a["data-series"] == series}


def assert_plot_matches(page: _Elements, explanation: dict[str, Any]) -> None:
    """Every block's point carries its exact figures, in forward order, higher error drawn higher."""
    blocks = explanation["blocks"]
    for series, value_of in (("error", lambda b: b["error"]), ("1-cosine", lambda b: 1.0 - b["cosine"])):
        drawn = points(page, series)
        assert list(drawn) == [b["module"] for b in blocks]
        for block in blocks:
            assert float(drawn[block["module"]]["data-value"]) == value_of(block), (series, block["module"])
        xs = [float(drawn[b["module"]]["cx"]) for b in blocks]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        by_value = sorted((float(p["data-value"]), float(p["cy"])) for p in drawn.values())
        heights = [cy for value, cy in by_value if value > 0]
        assert heights == sorted(heights, reverse=True), series  # log scale: a larger value is drawn higher


@pytest.fixture(scope="module")
def explained(cifar_export: Path, tmp_path_factory: pytest.TempPathFactory, run: Callable[..., Result],
              digest: Callable[[Path], dict[str, str]]) -> tuple[Path, dict[str, Any], Path]:
    """``xbuild verify EXPORT --explain --json --report R --summary S`` with S written by an earlier step."""
    folder = tmp_path_factory.mktemp("explained")
    report, summary = folder / "reports" / "verify.html", folder / "step_summary"
    summary.write_text("## an earlier step\n\nits own lines\n")
    before = digest(cifar_export)
    result = run("verify", cifar_export, "--explain", "--json", "--report", report, "--summary", summary)
    assert result.exit_code == 0, result.output
    assert digest(cifar_export) == before  # verify writes nothing into the folder it verifies
    return report, json.loads(result.stdout), summary


@pytest.fixture(scope="module")
def diverged(cifar_export: Path, cifar_weights: Path, tmp_path_factory: pytest.TempPathFactory,
             run: Callable[..., Result]) -> tuple[Path, dict[str, Any], Path]:
    """A user-brought ONNX with one block's weights 1 % off, verified with --explain: exit 1."""
    folder = tmp_path_factory.mktemp("diverged")
    drifted, report, summary = folder / "drifted.onnx", folder / "fail.htm", folder / "summary.md"
    drift_block(cifar_export / "model.onnx", drifted, "middle.blocks.1")
    result = run("verify", "--onnx", drifted, "--spec", CIFAR, "--weights", cifar_weights, "--explain", "--json",
                 "--report", report, "--summary", summary)
    assert result.exit_code == 1, result.output
    return report, json.loads(result.stdout), summary


def test_export_writes_its_report_into_the_folder_and_verify_leaves_it_alone(
        cifar_export: Path, run: Callable[..., Result]) -> None:
    text = (cifar_export / "report.html").read_text(encoding="utf-8")
    assert_self_contained(text)
    page = parse(text)
    assert verdict_of(page) == ("passed", "0", "passed")
    manifest = json.loads((cifar_export / "manifest.json").read_text())
    recorded = {(r["artifact"], r["backend"], r["batch"]) for r in manifest["verification"]["results"]}
    assert rows_of(page) == recorded and len(recorded) == 3  # model.onnx at batch 1, 2 and 4
    assert manifest["spec"]["hash"] in text
    for artifact in manifest["artifacts"]:  # every listed file with its hash; the report is none of them
        assert artifact["sha256"] in text
    assert "report.html" not in {a["path"] for a in manifest["artifacts"]}
    verified = run("verify", cifar_export)
    assert verified.exit_code == 0 and "unlisted" not in verified.output, verified.output


def test_verify_report_plots_the_explained_curve_and_the_summary_is_appended(
        explained: tuple[Path, dict[str, Any], Path]) -> None:
    report, data, summary = explained
    text = report.read_text(encoding="utf-8")
    assert_self_contained(text)
    page = parse(text)
    assert verdict_of(page) == ("passed", "0", "passed")
    assert rows_of(page) == {(c["artifact"], c["backend"], c["batch"]) for c in data["comparisons"]}
    (explanation,) = data["explanations"]
    (svg,) = tagged(page, "svg", "curve")
    assert svg["data-artifact"] == explanation["artifact"] == "model.onnx"
    assert svg["data-first-divergence"] == "" and not tagged(page, "line", "divergence")
    assert_plot_matches(page, explanation)
    bounds = {a["data-series"]: float(a["data-value"]) for a in tagged(page, "line", "bound")}
    fp32 = DEFAULT_TOLERANCES["fp32"]
    assert bounds == {"error": fp32.max_error, "1-cosine": 1 - fp32.min_cosine}

    markdown = summary.read_text(encoding="utf-8")
    assert markdown.startswith("## an earlier step\n\nits own lines\n\n###")  # appended after a blank line
    assert "**passed** (exit 0): verification passed" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| `model.onnx` |")]
    assert [line.split(" | ")[3] for line in table] == ["1", "2", "4"] and all(line.endswith(" ok |") for line in table)
    assert "- not run: model.onnx on onnxruntime-cuda" in markdown or "onnxruntime-cuda | seeded" in markdown
    assert "- no block leaves the fp32 tolerance" in markdown


def test_a_failed_verification_writes_the_report_with_the_first_divergence_marked(
        diverged: tuple[Path, dict[str, Any], Path]) -> None:
    report, data, summary = diverged
    text = report.read_text(encoding="utf-8")
    assert_self_contained(text)
    page = parse(text)
    assert verdict_of(page)[:2] == ("failed", "1")
    failed = tagged(page, "tr", "comparison")
    assert failed and all(a["data-result"] == "FAIL" for a in failed)
    (explanation,) = data["explanations"]
    assert explanation["first_divergence"] == "middle.blocks.1"
    (marker,) = tagged(page, "line", "divergence")
    assert marker["data-block"] == "middle.blocks.1"
    assert_plot_matches(page, explanation)
    drawn = points(page, "error")
    assert float(marker["x1"]) == float(drawn["middle.blocks.1"]["cx"])  # the marker stands on that block
    (bound,) = [a for a in tagged(page, "line", "bound") if a["data-series"] == "error"]
    for block in explanation["blocks"]:  # above the dashed line exactly where the block leaves max_error
        above = float(drawn[block["module"]]["cy"]) < float(bound["y1"])
        assert above == (block["error"] > float(bound["data-value"])), block["module"]
    assert "weight differs from the spec+weights export: middle.blocks.1." in text  # the notes, as in the table

    markdown = summary.read_text(encoding="utf-8")
    assert "**failed** (exit 1): verification failed" in markdown
    assert markdown.count("| **FAIL** |") == len(data["comparisons"]) == 3
    assert "- numeric: drifted.onnx on onnxruntime-cpu, batch 1, logits: error " in markdown
    assert "- first divergence: middle.blocks.1 = middle.blocks[0] (repeat 2/4)" in markdown


def test_a_failed_export_installs_its_report_and_writes_the_requested_ones(
        tmp_path: Path, run: Callable[..., Result]) -> None:
    out, report, summary = tmp_path / "out", tmp_path / "elsewhere" / "export.html", tmp_path / "summary.md"
    summary.write_text("earlier\n")
    result = run("export", CIFAR, "--batch", CIFAR_BATCH, "--tolerance", "max_error=1e-9", "--out", out,
                 "--report", report, "--summary", summary, "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    installed = (out / "report.html").read_text(encoding="utf-8")
    assert report.read_text(encoding="utf-8") == installed  # the same page in both places
    page = parse(installed)
    assert verdict_of(page)[:2] == ("failed", "1")
    assert rows_of(page) == {(c["artifact"], c["backend"], c["batch"]) for c in data["comparisons"]}
    (explanation,) = data["explanations"]  # a failure is explained without asking
    (marker,) = tagged(page, "line", "divergence")
    assert marker["data-block"] == explanation["first_divergence"] == explanation["blocks"][0]["module"]
    assert_plot_matches(page, explanation)
    markdown = summary.read_text(encoding="utf-8")
    assert markdown.startswith("earlier\n\n### `xbuild export ") and "**failed** (exit 1)" in markdown
    assert f"-> {out}/`" in markdown


def test_an_export_nothing_here_could_check_installs_nothing_but_reports(
        tmp_path: Path, run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 3 (a machine without ONNX Runtime): the folder is not created, --report and --summary are written."""
    from exporters.onnx import runtime

    monkeypatch.setattr(runtime, "onnxruntime_unavailable", lambda device: f"no onnxruntime for {device} here")
    out, report, summary = tmp_path / "out", tmp_path / "r.html", tmp_path / "summary.md"
    result = run("export", CIFAR, "--batch", CIFAR_BATCH, "--out", out, "--report", report, "--summary", summary)
    assert result.exit_code == 3, result.output
    assert not out.exists()
    page = parse(report.read_text(encoding="utf-8"))
    verdict, code, _ = verdict_of(page)
    assert (verdict, code) == ("not verified", "3") and not tagged(page, "tr", "comparison")
    assert "no onnxruntime for cpu here" in report.read_text(encoding="utf-8")
    assert "**not verified** (exit 3)" in summary.read_text(encoding="utf-8")


@pytest.mark.parametrize("command", ["export", "verify"])
def test_bad_report_and_summary_paths_exit_2_before_any_work(command: str, cifar_export: Path, tmp_path: Path,
                                                             run: Callable[..., Result]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = tmp_path / "out"
    base = ["export", CIFAR, "--out", out] if command == "export" else ["verify", cifar_export]
    cases = [(["--report", tmp_path / "report.txt"], "error: --report "),
             (["--report", tmp_path / "report"], "error: --report "),
             (["--report", blocker / "report.html"], "error: --report "),
             (["--report", tmp_path], "error: --report "),
             (["--summary", tmp_path], "error: --summary "),
             (["--summary", blocker / "summary.md"], "error: --summary "),
             (["--report", tmp_path / "same.html", "--summary", tmp_path / "same.html"], "error: --summary ")]
    for options, start in cases:
        result = run(*base, *options)
        assert result.exit_code == 2, (options, result.output)
        assert result.output.startswith(start) and result.output.count("\n") == 1, (options, result.output)
        assert "exporting" not in result.output and "integrity" not in result.output  # no work started
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert ".html or .htm" in run(*base, "--report", tmp_path / "report.txt").output


def test_non_finite_and_exact_blocks_are_drawn_at_the_edges_of_the_plot() -> None:
    """fp16 overflow: a non-finite block in the band above the axis; an exact block on the floor, hollow."""
    def row(module: str, error: float, cosine: float, finite: bool = True) -> BlockRow:
        return BlockRow(module, module, (1, 1), None, None, error, cosine, 1.0, 1.0, finite, not finite,
                        finite and error <= 2e-2)

    rows = [row("a", 0.0, 1.0), row("b", 1e-4, 0.99999), row("c", math.inf, 0.0, finite=False),
            row("head", 3e-3, 0.999)]
    svg = error_curve_svg(Explanation("m.fp16.onnx", "fp16", DEFAULT_TOLERANCES["fp16"], 2, rows))
    page = parse(svg)
    error = points(page, "error")
    assert [error[m]["data-value"] for m in "abc"] == ["0.0", "0.0001", "inf"]
    heights = {m: float(p["cy"]) for m, p in error.items()}
    assert heights["c"] < heights["head"] < heights["b"] < heights["a"]
    assert error["a"]["fill"] == "#ffffff" and "non-finite" in svg
    assert tagged(page, "line", "divergence")[0]["data-block"] == "c"


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
def test_a_headless_browser_shows_the_plot(explained: tuple[Path, dict[str, Any], Path],
                                           diverged: tuple[Path, dict[str, Any], Path], tmp_path: Path) -> None:
    def screenshot(page: Path) -> np.ndarray:
        from PIL import Image

        png = tmp_path / f"{page.stem}.png"
        profile = tmp_path / f"profile-{page.stem}"
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,2400",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
        return np.asarray(Image.open(png).convert("RGB")).astype(np.int32)

    def pixels_of(image: np.ndarray, color: str) -> np.ndarray:
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        return np.abs(image - rgb).sum(axis=2) <= 24

    for report, marked in ((explained[0], False), (diverged[0], True)):
        image = screenshot(report)
        assert image.shape[:2] == (2400, 1200)
        packed = (image[..., 0] << 16) | (image[..., 1] << 8) | image[..., 2]
        assert len(np.unique(packed)) > 100  # not a blank page
        for color in (ERROR_COLOR, COSINE_COLOR):  # the two curves, drawn in colours used nowhere else
            assert pixels_of(image, color).sum() > 500, (report.name, color)
        tallest = int(pixels_of(image, DIVERGENCE_COLOR).sum(axis=0).max())  # the marker: a vertical dashed line
        assert (tallest > 80) == marked, (report.name, tallest)


def test_a_summary_that_cannot_be_appended_leaves_the_file_as_it_was(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk half-way through the append: one clean error, and the other steps' lines intact."""
    import errno
    import os

    from exporters.verify.summary import append_summary
    from xception_build.errors import UserError

    summary = tmp_path / "step_summary"
    summary.write_text("## an earlier step\n")
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) < 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:len(data) // 2])

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(UserError, match=r"^--summary .*step_summary: cannot append the summary \(No space left"):
        append_summary(summary, "### a verification\n\n" + "| row |\n" * 50)
    monkeypatch.undo()
    assert summary.read_text() == "## an earlier step\n"


def test_verify_reports_an_export_it_could_not_check(cifar_export: Path, tmp_path: Path,
                                                     run: Callable[..., Result]) -> None:
    from exporters.onnx.runtime import onnxruntime_unavailable

    reason = onnxruntime_unavailable("cuda")
    if reason is None:
        pytest.skip("onnxruntime-cuda runs here: --backend onnxruntime-cuda verifies")
    report, summary = tmp_path / "r.html", tmp_path / "s.md"
    result = run("verify", cifar_export, "--backend", "onnxruntime-cuda", "--report", report, "--summary", summary)
    assert result.exit_code == 3, result.output
    text = report.read_text(encoding="utf-8")
    assert verdict_of(parse(text))[:2] == ("not verified", "3")
    assert "model.onnx on onnxruntime-cuda (batch 1, 2, 4): " in text and "no backend here compared it" in text
    assert "**not verified** (exit 3): not verified: model.onnx checked by no backend here" in summary.read_text()
