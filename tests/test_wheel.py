"""The built wheel, installed outside the checkout, compiles shipped specs by name.

The shipped specs are package data: a wheel that forgot them would still pass every other test,
which run from the checkout. This one builds the wheel from a copy of the sources, installs it
into a fresh virtual environment (``--no-deps --no-index``: nothing is downloaded, torch stays
the one already installed), lends that environment this one's dependencies through a ``.pth``
file, and runs its ``xbuild`` from an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "xception_build", "exporters", "specs")


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh environment with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--wheel-dir", work / "dist", source)
    (wheel,) = (work / "dist").glob("xception_build-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
         "-q", wheel)
    site = Path(_run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    # This environment's packages (torch, pydantic, click, ...) behind the wheel's own files. A path
    # listed in a .pth file is not scanned for .pth files itself, so this checkout's editable
    # install stays out of the new environment.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_the_installed_package_is_the_wheel(installed: Path, tmp_path: Path) -> None:
    where = _run(installed / "python", "-c", "import xception_build; print(xception_build.__file__)",
                 cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(installed.parent), where


def test_compile_a_shipped_spec_by_name_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    result = _run(installed / "xbuild", "compile", "xception65", cwd=tmp_path)
    title = result.stdout.splitlines()[0]
    assert title.startswith(f"xception65 ({installed.parent}") and title.endswith("input 3x299x299, "
                                                                                  "features 2048x10x10")
    assert "39,916,312" in result.stdout


def test_a_local_variant_extends_a_shipped_spec_by_name(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "variant.yaml").write_text("name: variant\nextends: xception41\nhead: {num_classes: 10}\n")
    result = _run(installed / "xbuild", "compile", "variant.yaml", "--json", cwd=tmp_path)
    assert '"total_params": 24941050' in result.stdout


def test_list_shows_the_shipped_specs(installed: Path, tmp_path: Path) -> None:
    names = [line.split()[0] for line in _run(installed / "xbuild", "list", cwd=tmp_path).stdout.splitlines()[1:]]
    assert names == sorted(path.stem for path in (ROOT / "specs").glob("*.yaml"))


def test_the_schema_editors_are_pointed_at_is_installed_beside_the_specs(installed: Path, tmp_path: Path) -> None:
    listed = json.loads(_run(installed / "xbuild", "list", "xception", "--json", cwd=tmp_path).stdout)
    spec = Path(listed[0]["file"])
    assert spec.is_relative_to(installed.parent)
    schema_file = spec.read_text().splitlines()[0].split("$schema=")[1]
    printed = json.loads(_run(installed / "xbuild", "schema", cwd=tmp_path).stdout)
    assert json.loads((spec.parent / schema_file).read_text()) == printed
