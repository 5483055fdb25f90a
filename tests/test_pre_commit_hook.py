"""The ``xbuild-validate`` pre-commit hook: a valid manifest entry whose command line passes the
shipped specs and fails a bad one, run the way pre-commit runs it (entry + staged file names)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from spec_files import ROOT, SPECS, shipped_specs

MANIFEST = ROOT / ".pre-commit-hooks.yaml"
XBUILD = Path(sys.executable).with_name("xbuild")


@pytest.fixture(scope="module")
def hook() -> dict[str, object]:
    hooks = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    (found,) = [entry for entry in hooks if entry["id"] == "xbuild-validate"]
    assert {"id", "name", "entry", "language"} <= set(found)  # pre-commit's required keys
    return found


def run_hook(hook: dict[str, object], files: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    command, *args = shlex.split(str(hook["entry"]))
    assert command == "xbuild"
    return subprocess.run([str(XBUILD), *args, *map(str, files)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_the_hook_selects_spec_files(hook: dict[str, object]) -> None:
    files = re.compile(str(hook["files"]))
    assert hook["language"] == "python" and hook["types"] == ["yaml"]
    assert all(files.search(str(spec.relative_to(ROOT))) for spec in shipped_specs())
    assert files.search("models/specs/my_variant.yml")
    assert not files.search(".github/workflows/ci.yaml") and not files.search("specs/sub/x.yaml")


def test_the_hook_passes_the_shipped_specs(hook: dict[str, object]) -> None:
    result = run_hook(hook, [spec.relative_to(ROOT) for spec in shipped_specs()], ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(shipped_specs())


def test_the_hook_fails_a_bad_spec_with_its_place(hook: dict[str, object], tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    bad = tmp_path / "specs" / "bad.yaml"
    bad.write_text((SPECS / "xception_cifar.yaml").read_text().replace("reps: 3", "reps: 0"))
    good = tmp_path / "specs" / "good.yaml"
    good.write_text("name: good\nextends: xception_cifar\nhead: {num_classes: 100}\n")
    result = run_hook(hook, [Path("specs/good.yaml"), Path("specs/bad.yaml")], tmp_path)
    assert result.returncode == 2
    assert "ok: specs/good.yaml" in result.stdout
    assert re.search(r"^error: specs/bad\.yaml:\d+:\d+: middle\.blocks\[0\]\.reps: ", result.stderr, re.M)
