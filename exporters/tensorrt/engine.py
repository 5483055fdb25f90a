"""TensorRT engines built from the exported ONNX: availability, build settings, the build, the sidecar.

Written against the real TensorRT Python API (type-checked with mypy against ``tensorrt-stubs``,
TensorRT 10.13's API) and imported lazily: without TensorRT or a GPU, every entry point raises
:class:`BackendUnavailable` with one line saying what is missing and how to get it.

Supported: TensorRT 10.x and 11.x. The two differ in typing, and :func:`build_recipe` is where:

* TensorRT 10 builds FP16 from the fp32 ONNX with ``BuilderFlag.FP16`` (weak typing).
* TensorRT >= 11 removed weak typing (``BuilderFlag.FP16``/``INT8`` are gone): the network is
  created strongly typed, and FP16 means an FP16 ONNX (``model.fp16.onnx``).
* INT8 on both is explicit quantization: the QDQ ``model.int8.onnx`` (symmetric int8, as
  TensorRT requires) built as a strongly typed network; no calibrator runs in TensorRT.

Also:

* Strict fp32 clears ``BuilderFlag.TF32`` (on by default on Ampere and later).
* The batch comes from one optimization profile (MIN:OPT:MAX); the runner rejects batches
  outside it with a clean error.
* The plan is written raw (loadable by trtexec, Polygraphy, Triton); what it is tied to --
  TensorRT version and the CUDA major it was built for, GPU, compute capability, builder settings,
  the ONNX's sha256 -- goes into a sidecar JSON next to it.
* The timing cache is read back when present and saved after the build, so rebuilds are faster;
  a cache TensorRT cannot read (corrupt, another version or GPU) is replaced by an empty one with
  a warning. Builds are still not bit-reproducible; engines are verified by tolerance.
* One ``trt.Logger`` per process (:func:`trt_logger`): TensorRT keeps the first logger it is given
  and warns when another is passed while a builder or runtime lives.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters.contract import INPUT_NAME, BatchProfile, Precision
from xception_build.errors import BackendUnavailable, UserError
from xception_build.files import sha256_file

if TYPE_CHECKING:
    import tensorrt as trt

SUPPORTED_MAJORS = (10, 11)
INSTALL_HINT = ("pip install 'xception-build[trt]' on Linux with an NVIDIA driver: the PyPI `tensorrt` "
                "package fetches its libraries from NVIDIA's index (https://pypi.nvidia.com) while it "
                "installs, so that index must be reachable; TensorRT 10.x and 11.x are supported")


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot run here (one line), or ``None`` when it can."""
    missing = []
    try:
        import tensorrt
    except ImportError:
        missing.append(f"TensorRT is not installed: {INSTALL_HINT}")
    else:
        if not hasattr(tensorrt, "Builder"):  # tensorrt-stubs alone makes an empty `tensorrt` package
            missing.append(f"only the type stubs (tensorrt-stubs) are installed, not TensorRT: {INSTALL_HINT}")
        elif major_version() not in SUPPORTED_MAJORS:
            missing.append(f"TensorRT {tensorrt.__version__} is not a supported version "
                           f"({', '.join(f'{m}.x' for m in SUPPORTED_MAJORS)})")
    import torch

    if not torch.cuda.is_available():
        build = "a driver" if torch.version.cuda else f"a CUDA build (this is torch {torch.__version__})"
        missing.append(f"no CUDA GPU is visible to torch: TensorRT needs an NVIDIA GPU and {build}")
    return "; ".join(missing) or None


def require_tensorrt() -> None:
    """Return when TensorRT and a GPU are here; else :class:`BackendUnavailable` naming what is missing."""
    reason = tensorrt_unavailable()
    if reason is not None:
        raise BackendUnavailable(f"TensorRT backend unavailable: {reason}")


def major_version() -> int:
    import tensorrt as trt

    return int(trt.__version__.split(".")[0])


@functools.cache
def trt_logger() -> trt.ILogger:
    """The process's one TensorRT logger (warnings and errors to stderr)."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def tensorrt_cuda_major() -> str | None:
    """The CUDA major the installed TensorRT wheels were built for (``tensorrt-cu12*``), or None
    where TensorRT did not come from those wheels (a system install)."""
    for dist in distributions():
        match = re.fullmatch(r"tensorrt[-_]cu(\d+)(?:[-_]libs)?", (dist.metadata["Name"] or "").lower())
        if match:
            return match.group(1)
    return None


@dataclass(frozen=True)
class BuildSettings:
    """Everything the builder is told; recorded verbatim in the sidecar."""

    profile: BatchProfile
    input_shape: tuple[int, ...]  # (C, H, W)
    precision: Precision = "fp32"
    workspace_bytes: int = 4 << 30


@dataclass(frozen=True)
class BuildRecipe:
    """How one TensorRT version builds one precision: which ONNX, which network typing, which flags."""

    onnx_precision: Precision  # the precision of the ONNX file the engine is built from
    strongly_typed: bool
    fp16_flag: bool
    clear_tf32: bool


def build_recipe(major: int, precision: Precision) -> BuildRecipe:
    """The one place the TensorRT 10 and 11 build paths differ.

    int8 is explicit quantization on both: the QDQ ``model.int8.onnx`` in a strongly typed network,
    the path TensorRT 10 recommends (its INT8 flag and calibrators are deprecated) and 11 keeps."""
    if precision == "int8":
        return BuildRecipe("int8", strongly_typed=True, fp16_flag=False, clear_tf32=False)
    if major >= 11:  # no weak typing: the ONNX's own types decide
        return BuildRecipe(precision, strongly_typed=True, fp16_flag=False, clear_tf32=precision == "fp32")
    return BuildRecipe("fp32", strongly_typed=False, fp16_flag=precision == "fp16",
                       clear_tf32=precision == "fp32")


def build_engine(onnx_path: Path, plan_path: Path, settings: BuildSettings, *,
                 timing_cache: Path | None = None) -> dict[str, Any]:
    """Build ``plan_path`` from ``onnx_path``; write the sidecar ``<plan>.json``; return its contents.

    ``onnx_path`` must be of ``build_recipe(major_version(), precision).onnx_precision``.
    """
    require_tensorrt()
    import tensorrt as trt
    import torch

    recipe = build_recipe(major_version(), settings.precision)
    logger = trt_logger()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if recipe.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        detail = "; ".join(errors) or "no detail"
        raise UserError(f"{onnx_path.name}: TensorRT's ONNX parser failed: {detail}")
    config = _builder_config(builder, settings, recipe)
    use_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path.name} (its log above says why)")
    plan_path.write_bytes(bytes(plan))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    major, minor = torch.cuda.get_device_capability()
    sidecar = {
        "tensorrt_version": str(trt.__version__),
        "tensorrt_cuda_major": tensorrt_cuda_major(),
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "builder": {"profile": str(settings.profile), "input_shape": list(settings.input_shape),
                    "precision": settings.precision, "workspace_bytes": settings.workspace_bytes,
                    "strongly_typed": recipe.strongly_typed, "fp16_flag": recipe.fp16_flag,
                    "tf32": not recipe.clear_tf32,
                    "timing_cache": timing_cache.name if timing_cache is not None else None},
        "onnx": {"path": onnx_path.name, "sha256": sha256_file(onnx_path)},
    }
    sidecar_path(plan_path).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


def use_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> None:
    """Give the build the cache in ``path`` (or an empty one); a cache TensorRT cannot use is
    replaced by an empty one with a warning, never a crash."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if data:
            warnings.warn(f"{path}: TensorRT cannot use this timing cache (corrupt, or from another "
                          "TensorRT version or GPU); building with an empty one", stacklevel=2)
        empty = config.create_timing_cache(b"")
        if empty is None or not config.set_timing_cache(empty, ignore_mismatch=False):
            raise RuntimeError("TensorRT could not create an empty timing cache")


def _builder_config(builder: trt.Builder, settings: BuildSettings, recipe: BuildRecipe) -> trt.IBuilderConfig:
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    if recipe.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if recipe.clear_tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    shapes = [trt.Dims([batch, *settings.input_shape]) for batch in
              (settings.profile.min, settings.profile.opt, settings.profile.max)]
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    return config


def sidecar_path(plan_path: Path) -> Path:
    return plan_path.with_name(plan_path.name + ".json")


def read_sidecar(plan_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(sidecar_path(Path(plan_path)).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
