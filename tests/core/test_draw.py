"""``xbuild draw SPEC -o FILE``: the picture of a network, checked against its plan.

The drawings are read back from the files the command writes (the SVG, or the SVG inside the
HTML page) with ``xml.etree``: the blocks, their spec paths, files and lines, repeat counts,
channels, shapes and costs must be the plan's (``plan_spec``), computed here from the same spec.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from spec_files import ROOT, SPECS

from xception_build import load_spec, plan_spec
from xception_build.catalog import shipped_specs
from xception_build.cli import main
from xception_build.plan import Plan
from xception_build.tables import cite

SVG = "{http://www.w3.org/2000/svg}"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


def drawing(path: Path) -> ET.Element:
    """The SVG root of a drawn file: the file itself, or the ``<svg>`` inline in the HTML page."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        text = text[text.index("<svg"):text.index("</svg>") + len("</svg>")]
    return ET.fromstring(text)


def groups(root: ET.Element, role: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == role]


def texts(element: ET.Element, role: str | None = None) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text") if role is None or t.get("class") == role]


def hwc(shape: str) -> str:
    """``728x19x19`` (the plan's channels x height x width) as the picture writes it: ``19x19x728``;
    a vector's size (the logits: ``1000``) as it is."""
    if "x" not in shape:
        return shape
    channels, height, width = shape.split("x")
    return f"{height}x{width}x{channels}"


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text.replace(",", ""))]


def check_layers(g: ET.Element, kind: str, config: Any) -> None:
    """A box's layers are those of its planned block (``config``: what the block kind planned)."""
    steps, shortcut = texts(g, "step"), texts(g, "shortcut")
    if kind == "conv":
        assert len(steps) == 1 and config.out_channels in numbers(steps[0])
        assert config.stride == 1 or f"stride {config.stride}" in steps[0]
        assert shortcut == texts(g, "shared") == []
        return
    # one step per separable conv, naming its channels and its stride; then the max-pool, if any
    assert len(steps) == len(config.convs) + (1 if config.pool_stride else 0)
    for step, conv in zip(steps, config.convs, strict=False):
        assert conv.out_channels in numbers(step)
        assert (f"stride {conv.stride}" in step) == (conv.stride > 1)
    if config.pool_stride:
        assert steps[-1].startswith("MaxPool 3x3")
        assert (f"stride {config.pool_stride}" in steps[-1]) == (config.pool_stride > 1)
    assert len(texts(g, "shared")) == (1 if config.preact_activation else 0)
    if config.shortcut in ("conv", "conv_norm"):
        assert shortcut[0] == f"Conv 1x1, {config.out_channels}"
        assert ("BN" in shortcut) == (config.shortcut == "conv_norm")
        assert (f"stride {config.stride}" in shortcut) == (config.stride > 1)
    else:
        assert shortcut == (["identity"] if config.shortcut == "identity" else [])


def check_against_plan(root: ET.Element, plan: Plan) -> None:
    blocks = groups(root, "block")
    # every planned module is in exactly one box, in forward order
    drawn = [module for g in blocks for module in g.get("data-modules", "").split()]
    assert drawn == [b.module_name for b in plan.blocks]
    by_module = {b.module_name: b for b in plan.blocks}
    for g in blocks:
        copies = [by_module[m] for m in g.get("data-modules", "").split()]
        first = copies[0]
        assert {b.spec_path for b in copies} == {g.get("data-spec-path")} == {first.spec_path}
        assert g.get("data-line") == str(first.line) and g.get("data-file") == first.file
        assert g.get("data-in") == str(first.in_shape) and g.get("data-kind") == first.kind
        assert int(g.get("data-params", "")) == sum(b.params for b in copies)
        assert int(g.get("data-macs", "")) == sum(b.macs for b in copies)
        in_a_row = int(g.get("data-repeat", ""))
        assert [b.repeat[1] for b in copies] == [len(copies)] * len(copies)
        assert g.get("data-out") == str(copies[in_a_row - 1].out_shape)
        # what a reader sees: the spec path and the place it is written, as `xbuild compile` cites it
        assert texts(g, "path") == [first.spec_path]
        assert texts(g, "cite") == [f"· {cite(first.file, first.line, unknown='')}"]
        assert texts(g, "badge") == ([f"x {in_a_row}"] if in_a_row > 1 else [])
        check_layers(g, first.kind, first.config)
    # the arrow into each box carries the box's input, labelled height x width x channels
    for flow in groups(root, "flow"):
        last_edge: ET.Element | None = None
        for child in flow:
            if child.get("class") == "edge":
                last_edge = child
                assert texts(child, "shape") == [hwc(child.get("data-shape", ""))]
            elif child.get("class") == "block":
                assert last_edge is not None and last_edge.get("data-shape") == child.get("data-in")
    flows = {g.get("data-flow"): g for g in groups(root, "flow")}
    for flow in plan.flows:
        if not (flow.stem or flow.blocks):
            assert flow.name not in flows
            continue
        assert flows[flow.name].get("data-repeat") == str(flow.repeat)
        assert texts(flows[flow.name], "repeat") == ([f"x {flow.repeat}"] if flow.repeat > 1 else [])
    (head,) = groups(root, "head")
    out = groups(root, "edge")[-1]  # after the head
    pooled = plan.head.num_classes or plan.head.in_features
    assert out.get("data-shape") == (str(pooled) if plan.head.pool != "none" else str(plan.feature_shape))
    assert head.get("data-num-classes") == str(plan.head.num_classes)
    assert int(head.get("data-params", "")) == plan.head.params
    assert f"{plan.total_params:,} params" in texts(root, "subtitle")[0]


@pytest.mark.parametrize("fmt", ["svg", "html"])
@pytest.mark.parametrize("name", list(shipped_specs()))
def test_every_shipped_spec_draws_as_its_plan(name: str, fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.{fmt}"
    code, err = run("draw", name, "-o", str(out))
    assert code == 0, err
    assert err == f"wrote {out}\n"
    check_against_plan(drawing(out), plan_spec(load_spec(name)))


def test_a_repeated_flow_is_drawn_once_with_its_count(tmp_path: Path) -> None:
    out = tmp_path / "x65.svg"
    assert run("draw", str(SPECS / "xception65.yaml"), "-o", str(out))[0] == 0
    root = drawing(out)
    (middle,) = [g for g in groups(root, "flow") if g.get("data-flow") == "middle"]
    (block,) = groups(middle, "block")
    plan = plan_spec(load_spec(SPECS / "xception65.yaml"))
    repeat = next(f.repeat for f in plan.flows if f.name == "middle")
    assert repeat == 16 and len(block.get("data-modules", "").split()) == repeat
    assert texts(middle, "repeat") == ["x 16"]
    assert texts(middle, "repeat_cite") == ["middle.repeat · xception65.yaml:10"]


@pytest.mark.parametrize("repeat", [1, 3])
def test_set_applies_as_in_compile(repeat: int, tmp_path: Path) -> None:
    out = tmp_path / "cifar.svg"
    overrides = ["--set", f"middle.repeat={repeat}", "--set", "entry.blocks[1].repeat=2"]
    assert run("draw", "xception_cifar", *overrides, "-o", str(out))[0] == 0
    root = drawing(out)
    check_against_plan(root, plan_spec(load_spec("xception_cifar", [o for o in overrides if o != "--set"])))
    entry = [g for g in groups(root, "block") if g.get("data-spec-path") == "entry.blocks[1]"]
    assert len(entry) == 1 and texts(entry[0], "badge") == ["x 2"]
    assert f"--set middle.repeat={repeat}" in texts(root, "subtitle")[0]
    frames = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "repeat"]
    assert len(frames) == (1 if repeat > 1 else 0)


def test_the_html_page_is_self_contained_with_a_tooltip_per_block(tmp_path: Path) -> None:
    out = tmp_path / "xception.html"
    assert run("draw", "xception", "-o", str(out))[0] == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>xception · xception.yaml</title>" in page
    assert "<script" not in page and re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]
    for g in groups(drawing(out), "block"):
        tooltip = g.find(f"{SVG}title")
        assert tooltip is not None and (tooltip.text or "").startswith(g.get("data-spec-path", ""))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_png_is_the_svg_rasterized(tmp_path: Path) -> None:
    pytest.importorskip("resvg_py")
    png, svg = tmp_path / "cifar.png", tmp_path / "cifar.svg"
    assert run("draw", "xception_cifar", "-o", str(png))[0] == 0
    assert run("draw", "xception_cifar", "-o", str(svg))[0] == 0
    width, height = png_size(png.read_bytes())
    root = drawing(svg)
    svg_width, svg_height = float(root.get("width", "")), float(root.get("height", ""))
    assert width >= svg_width and height >= svg_height  # never scaled down below the SVG's own size
    assert abs(width / height - svg_width / svg_height) < 0.01


PROBE = """
import sys
sys.modules["resvg_py"] = None  # as if resvg-py were not installed: importing it raises ImportError
from xception_build.cli import main
main(sys.argv[1:], prog_name="xbuild")
"""


def test_without_the_png_library_a_png_is_exit_3_and_svg_still_works(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(b"before")
    result = subprocess.run([sys.executable, "-c", PROBE, "draw", "xception_cifar", "-o", str(png)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: PNG output needs the resvg-py package")
    assert lines[1] == "  hint: pip install 'xception-build[draw]', or draw to .svg or .html"
    assert png.read_bytes() == b"before"
    svg = tmp_path / "x.svg"
    result = subprocess.run([sys.executable, "-c", PROBE, "draw", "xception_cifar", "-o", str(svg)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and groups(drawing(svg), "block")


def one_error(code: int, err: str) -> str:
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("name", ["x.pdf", "x.SVG.txt", "x"])
def test_an_unknown_extension_is_one_line_exit_2(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    out.write_text("keep")
    line = one_error(*run("draw", "xception", "-o", str(out)))
    assert line.startswith(f"error: -o {out}: ") and line.endswith("the extension picks the format: .svg, .png, .html")
    assert out.read_text() == "keep"


def test_upper_case_extensions_are_understood(tmp_path: Path) -> None:
    out = tmp_path / "x.SVG"
    assert run("draw", "xception_cifar", "-o", str(out))[0] == 0
    assert groups(drawing(out), "block")


def test_an_output_that_cannot_be_written_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "x.svg"
    assert one_error(*run("draw", "xception", "-o", str(missing))) == (
        f"error: -o {missing}: {missing.parent}: no such folder")
    assert not (tmp_path / "no").exists()
    folder = tmp_path / "folder.svg"
    folder.mkdir()
    assert "is a folder" in one_error(*run("draw", "xception", "-o", str(folder)))
    under_a_file = tmp_path / "file.txt"
    under_a_file.write_text("keep")
    assert one_error(*run("draw", "xception", "-o", str(under_a_file / "x.svg"))).endswith("is not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: no folder is read-only to it")
def test_a_read_only_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "permission denied" in one_error(*run("draw", "xception", "-o", str(locked / "x.svg")))
    finally:
        locked.chmod(0o700)


def test_an_existing_file_is_replaced_only_by_a_finished_drawing(tmp_path: Path) -> None:
    out = tmp_path / "x.svg"
    out.write_text("before")
    code, err = run("draw", "xception_cifar", "--set", "middle.repeat=0", "-o", str(out))
    assert code == 2 and "middle.repeat" in err
    assert out.read_text() == "before"
    assert run("draw", "xception_cifar", "-o", str(out))[0] == 0
    assert groups(drawing(out), "block")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.svg"]  # no temporary file left behind


def test_the_readme_picture_is_what_the_command_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/images/xception.svg is made by the command the README shows, from the repository root;
    a change of the drawing (or of specs/xception.yaml) means making it again with that command."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "xception.svg"
    assert run("draw", "specs/xception.yaml", "-o", str(out))[0] == 0
    picture = ROOT / "docs" / "images" / "xception.svg"
    assert out.read_text(encoding="utf-8") == picture.read_text(encoding="utf-8"), (
        "docs/images/xception.svg is out of date: xbuild draw specs/xception.yaml -o docs/images/xception.svg")
    assert "![" in (readme := (ROOT / "README.md").read_text(encoding="utf-8"))
    assert "(docs/images/xception.svg)" in readme
    assert "xbuild draw specs/xception.yaml -o docs/images/xception.svg" in readme


def test_a_write_the_file_system_refuses_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import xception_build.files

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xception_build.files.os, "fsync", disk_full)
    out = tmp_path / "x.svg"
    out.write_text("before")
    code, err = run("draw", "xception_cifar", "-o", str(out))
    assert code == 2 and err.startswith(f"error: {out}: writing the output failed: No space left on device")
    assert out.read_text() == "before" and sorted(p.name for p in tmp_path.iterdir()) == ["x.svg"]
