"""TensorRT: type-checked against tensorrt-stubs here; built and run only where TensorRT and a GPU exist."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest

from exporters.contract import BatchProfile
from exporters.tensorrt.engine import require_tensorrt, tensorrt_unavailable
from xception_build.errors import BackendUnavailable, UserError

ROOT = Path(__file__).resolve().parents[2]
PROBE = '''
import tensorrt as trt

def probe() -> None:
    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    config.set_flag("FP16")
    config.no_such_method()
'''


def _sanitized_stubs(target: Path) -> Path:
    """A copy of the installed tensorrt-stubs that mypy can parse.

    The generated stubs (10.13) have five lines that are not valid Python (a parameter named
    ``in``, a non-default parameter after defaults) and no ``py.typed`` marker, so mypy would
    silently treat ``tensorrt`` as ``Any``. The copy, on MYPYPATH, makes the check real.
    """
    for package in ("tensorrt", "tensorrt_bindings"):
        found = importlib.util.find_spec(package)
        assert found is not None and found.submodule_search_locations
        source = Path(next(iter(found.submodule_search_locations)))
        skip = shutil.ignore_patterns("*.py", "*.so", "__pycache__")
        shutil.copytree(source, target / package, ignore=skip)
    for stub in target.rglob("*.pyi"):
        lines = stub.read_text().splitlines()
        for _ in range(50):
            try:
                ast.parse("\n".join(lines))
                break
            except SyntaxError as exc:
                bad = (exc.lineno or 1) - 1
                fixed = re.sub(r"\bin: ", "in_: ", lines[bad])
                lines[bad] = fixed if fixed != lines[bad] else re.sub(r" = [^,)]+", "", lines[bad])
        stub.write_text("\n".join(lines) + "\n")
    return target


def test_tensorrt_backend_type_checks_against_tensorrt_stubs(tmp_path: Path) -> None:
    """mypy with the stubs in force; torch, numpy and onnx are skipped (the CI's plain mypy run covers
    them, in seconds here instead of a minute): this check is about the TensorRT API."""
    try:
        version("tensorrt-stubs")
    except PackageNotFoundError:
        if os.environ.get("CI"):  # scripts/setup.sh installs them: in CI a skip would hide a broken install
            pytest.fail("tensorrt-stubs is not installed (scripts/setup.sh installs it)")
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    stubs = _sanitized_stubs(tmp_path / "stubs")
    (tmp_path / "probe.py").write_text(PROBE)
    config = tmp_path / "mypy.ini"
    config.write_text(f"""[mypy]
python_version = 3.11
ignore_missing_imports = True
follow_imports = silent
mypy_path = {stubs}
cache_dir = {tmp_path / "cache"}
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
[mypy-torch,torch.*,numpy,numpy.*,onnx,onnx.*,pydantic,pydantic.*,xception_build,xception_build.*]
follow_imports = skip
""")
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config),
                           "exporters/tensorrt/", str(tmp_path / "probe.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    ours = [line for line in output.splitlines() if line.startswith("exporters/")]
    assert not ours, output
    # the probe's mistakes are found, so tensorrt really was typed, not Any
    assert 'incompatible type "str"; expected "BuilderFlag"' in output, output
    assert '"IBuilderConfig" has no attribute "no_such_method"' in output, output


def test_missing_tensorrt_is_one_line_saying_how_to_get_it() -> None:
    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here")
    with pytest.raises(BackendUnavailable) as caught:
        require_tensorrt()
    message = caught.value.format()
    assert "\n" not in message
    assert message.startswith("TensorRT backend unavailable: ")
    assert "pip install 'xception-build[trt]'" in message or "GPU" in message
    assert caught.value.exit_code == 3


@pytest.fixture(scope="module")
def trt_ready() -> None:
    reason = tensorrt_unavailable()
    if reason is not None:
        pytest.skip(f"needs TensorRT and a GPU: {reason}")


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_runs_and_matches_pytorch(trt_ready: None, cifar_export: Path, tmp_path: Path,
                                               precision: str) -> None:
    import json

    from exporters.onnx.export import load_onnx, serialize, to_fp16
    from exporters.onnx.runtime import OnnxRuntimeRunner
    from exporters.tensorrt.engine import BuildSettings, build_engine, build_recipe, major_version
    from exporters.tensorrt.runtime import TensorRTRunner
    from exporters.verify.compare import DEFAULT_TOLERANCES, compare

    source = cifar_export / "model.onnx"
    if build_recipe(major_version(), precision).onnx_precision == "fp16":
        source = tmp_path / "model.fp16.onnx"
        source.write_bytes(serialize(to_fp16(load_onnx(cifar_export / "model.onnx"))))
    plan, cache = tmp_path / "model.plan", tmp_path / "timing.cache"
    settings = BuildSettings(BatchProfile(1, 2, 4), (3, 32, 32), precision, 1 << 30)
    sidecar = build_engine(source, plan, settings, timing_cache=cache)
    assert cache.stat().st_size > 0
    assert json.loads((tmp_path / "model.plan.json").read_text()) == sidecar
    assert sidecar["builder"]["profile"] == "1:2:4" and sidecar["compute_capability"]
    assert not plan.read_bytes().startswith(b"{")  # raw plan, no JSON header
    build_engine(source, tmp_path / "again.plan", settings, timing_cache=cache)  # reuses the cache

    with TensorRTRunner(plan) as runner, OnnxRuntimeRunner(cifar_export / "model.onnx") as reference:
        for batch in (1, 2, 4):
            feeds = {"input": np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)}
            report = compare(reference.infer(feeds), runner.infer(feeds), DEFAULT_TOLERANCES[precision],
                             artifact="model.plan", backend="tensorrt", batch=batch, precision=precision)
            assert report.passed, report.outputs[0].failures
        with pytest.raises(UserError, match="outside the batch profile 1:2:4"):
            runner.infer({"input": np.zeros((5, 3, 32, 32), dtype=np.float32)})


@pytest.mark.parametrize(("major", "precision", "onnx", "strongly_typed", "fp16_flag", "tf32"), [
    (10, "fp32", "fp32", False, False, False), (10, "fp16", "fp32", False, True, True),
    (11, "fp32", "fp32", True, False, False), (11, "fp16", "fp16", True, False, True),
    (10, "int8", "int8", True, False, True), (11, "int8", "int8", True, False, True),
])
def test_tensorrt_10_and_11_build_paths(major: int, precision: str, onnx: str, strongly_typed: bool,
                                        fp16_flag: bool, tf32: bool) -> None:
    """TensorRT 11 has no weak typing: FP16 comes from an FP16 ONNX in a strongly typed network."""
    from exporters.tensorrt.engine import build_recipe

    recipe = build_recipe(major, precision)  # type: ignore[arg-type]
    assert (recipe.onnx_precision, recipe.strongly_typed, recipe.fp16_flag, not recipe.clear_tf32) == \
        (onnx, strongly_typed, fp16_flag, tf32)


class _FakeConfig:
    """An IBuilderConfig whose create_timing_cache returns None for bytes TensorRT cannot read."""

    def __init__(self) -> None:
        self.caches: list[bytes] = []

    def create_timing_cache(self, data: bytes) -> bytes | None:
        return None if data.startswith(b"corrupt") else data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        self.caches.append(cache)
        return True


def test_a_timing_cache_tensorrt_cannot_read_is_replaced_with_a_warning(tmp_path: Path) -> None:
    from exporters.tensorrt.engine import use_timing_cache

    good, bad = tmp_path / "good.cache", tmp_path / "bad.cache"
    good.write_bytes(b"timings")
    bad.write_bytes(b"corrupt timings")
    config = _FakeConfig()
    use_timing_cache(config, good)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="cannot use this timing cache"):
        use_timing_cache(config, bad)  # type: ignore[arg-type]
    use_timing_cache(config, tmp_path / "absent.cache")  # type: ignore[arg-type]
    assert config.caches == [b"timings", b"", b""]
