"""Spec commands never import torch: they need the plan only, and torch takes over a second to
import while a spec checks in milliseconds (``benchmarks/cli_startup.py`` measures the figures
docs/SPEC.md records; timings themselves are not asserted, the machine's load would decide them).

Each command runs in a fresh interpreter, which reports at exit whether ``torch`` was imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from spec_files import SPECS

# Runs `xbuild ARGS...` in this interpreter, then says on stderr whether torch got imported.
PROBE = """
import atexit, sys
atexit.register(lambda: print("torch imported" if "torch" in sys.modules else "torch not imported",
                              file=sys.stderr))
from xception_build.cli import main
main(sys.argv[1:], prog_name="xbuild")
"""


def xbuild(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


SPEC_COMMANDS = [
    ["validate", str(SPECS / "xception.yaml"), str(SPECS / "xception65.yaml")],
    ["compile", str(SPECS / "xception65.yaml")],
    ["compile", str(SPECS / "xception.yaml"), "--json", "--set", "head.num_classes=10"],
    ["compile", "xception41"],
    ["list"],
    ["schema"],
    ["diff", "xception41", "xception65", "--set", "defaults.layout=[act,dw,pw,norm]"],
]


@pytest.mark.parametrize("args", SPEC_COMMANDS, ids=lambda args: " ".join(a for a in args if "/" not in a))
def test_spec_commands_do_not_import_torch(args: list[str]) -> None:
    result = xbuild(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith("torch not imported\n"), result.stderr


@pytest.mark.parametrize("suffix", [".svg", ".html", ".png"])
def test_draw_does_not_import_torch(suffix: str, tmp_path: Path) -> None:
    if suffix == ".png":
        pytest.importorskip("resvg_py")
    out = tmp_path / f"xception65{suffix}"
    result = xbuild("draw", str(SPECS / "xception65.yaml"), "--set", "middle.repeat=4", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith("torch not imported\n"), result.stderr
    assert out.stat().st_size > 0


def test_a_spec_error_does_not_import_torch_either() -> None:
    result = xbuild("compile", str(SPECS / "xception.yaml"), "--set", "middle.repeat=0")
    assert result.returncode == 2 and "middle.repeat" in result.stderr
    assert result.stderr.endswith("torch not imported\n"), result.stderr


def test_the_package_imports_without_torch() -> None:
    code = ("import sys, xception_build as x; spec = x.load_spec(sys.argv[1]); x.plan_spec(spec); "
            "print('torch' in sys.modules); x.build_model; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(SPECS / "xception.yaml")], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.split() == ["False", "True"], result.stderr


def test_the_probe_sees_torch_when_a_command_builds(tmp_path: Path) -> None:
    """compile --out writes weights, so it builds the model: the probe must report torch then."""
    result = xbuild("compile", str(SPECS / "xception_cifar.yaml"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith("torch imported\n"), result.stderr
