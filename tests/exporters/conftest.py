"""Fixtures for the exporter tests: one small export shared per worker, copied where a test edits it."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "specs" / "xception_cifar.yaml"
CIFAR_BATCH = "1:2:4"

@pytest.fixture(scope="session")
def xbuild() -> click.Group:
    """The ``xbuild`` group with the export commands, whether or not the package is pip-installed."""
    from exporters.bench.cli import bench_command
    from exporters.cli import export_command, verify_command
    from xception_build.cli import XBuildGroup, main

    return XBuildGroup(name="xbuild", commands={**main.commands, "export": export_command,
                                                "verify": verify_command, "bench": bench_command})


@pytest.fixture(scope="session")
def run(xbuild: click.Group) -> Callable[..., Result]:
    """Invoke ``xbuild ARGS...`` in-process; returns click's Result (exit_code, output)."""

    def invoke(*args: str | Path) -> Result:
        return CliRunner().invoke(xbuild, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def cifar_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR weights in which every layer matters: BatchNorm calibrated on data, so every
    activation is at unit scale, and random affine parameters, so no norm is an identity. A wrong
    weight anywhere then shows up in the logits."""
    import torch

    from xception_build import build_model
    from xception_build.calibration import calibrate_batchnorm
    from xception_build.weights import save_weights

    model = build_model(CIFAR, seed=1)
    generator = torch.Generator().manual_seed(1)
    calibrate_batchnorm(model, [torch.randn(32, 3, 32, 32, generator=generator)])
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.weight.uniform_(0.5, 1.5, generator=generator)
            norm.bias.uniform_(-0.2, 0.2, generator=generator)
    path = tmp_path_factory.mktemp("weights") / "cifar.safetensors"
    save_weights(model.eval(), path)
    return path


@pytest.fixture(scope="session")
def cifar_export(tmp_path_factory: pytest.TempPathFactory, run: Callable[..., Result],
                 cifar_weights: Path) -> Path:
    """``xbuild export specs/xception_cifar.yaml --weights W --batch 1:2:4``, once per worker; read-only."""
    out = tmp_path_factory.mktemp("cifar-export")
    result = run("export", CIFAR, "--weights", cifar_weights, "--batch", CIFAR_BATCH, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def export_copy(cifar_export: Path, tmp_path: Path) -> Path:
    """A private copy of the CIFAR export that a test may tamper with."""
    target = tmp_path / "export"
    shutil.copytree(cifar_export, target)
    return target


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(image folder, weights of the CIFAR spec trained on it for two epochs by examples/train.py),
    once per worker: 400 training and 300 held-out images (so int8 can be judged on 256 of them)."""
    from image_folders import make_image_folder
    from launch import EXAMPLE, explain, python

    root = tmp_path_factory.mktemp("int8")
    data = make_image_folder(root / "images", train=40, val=30)
    weights = root / "trained.safetensors"
    done = python(EXAMPLE, CIFAR, "--data", data, "--epochs", "2", "--batch-size", "32", "--device", "cpu",
                  "--workers", "0", "--recipe", "modern", "--out", weights, "--no-progress", timeout=1200)
    assert done.returncode == 0, explain(done)
    return data, weights


@pytest.fixture(scope="session")
def digest() -> Callable[[Path], dict[str, str]]:
    """sha256 of every file under a folder (hidden files included), to prove it was left intact."""

    def tree(directory: Path) -> dict[str, str]:
        return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(directory.rglob("*")) if p.is_file()}

    return tree
