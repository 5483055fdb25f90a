"""TensorRT: build an engine from the exported ONNX, and run it.

Written against the real TensorRT Python API (type-checked with mypy against ``tensorrt-stubs``)
and imported lazily: without TensorRT or a GPU, every entry point raises
:class:`BackendUnavailable` with one line saying what is missing and how to get it.

* TensorRT 10 builds FP16 from the fp32 ONNX with ``BuilderFlag.FP16``. TensorRT >= 11 removed
  weak typing, so FP16 there means an FP16 ONNX built as a strongly typed network.
* Strict fp32 clears ``BuilderFlag.TF32`` (on by default on Ampere and later).
* The batch comes from one optimization profile (MIN:OPT:MAX); the runner rejects batches
  outside it with a clean error, through the shared :class:`Runner` checks.
* The plan is written raw (loadable by trtexec, Polygraphy, Triton); what it is tied to -- TensorRT
  and CUDA versions, GPU, compute capability, builder settings, the ONNX's sha256 -- goes into a
  sidecar JSON next to it.
* The timing cache is read back when present and saved after the build, so rebuilds are faster.
  Builds are still not bit-reproducible; engines are verified by tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporters.manifest import sha256_file
from exporters.runners import INPUT_NAME, BatchProfile, Runner, TensorSpec
from xception_build.errors import BackendUnavailable, UserError

if TYPE_CHECKING:
    import tensorrt as trt

_INSTALL = ("pip install 'xception-build[trt]' (wheels from https://pypi.nvidia.com) on Linux with an "
            "NVIDIA driver")


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot run here (one line), or ``None`` when it can."""
    missing = []
    try:
        import tensorrt
    except ImportError:
        missing.append(f"TensorRT is not installed: {_INSTALL}")
    else:
        if not hasattr(tensorrt, "Builder"):  # tensorrt-stubs alone makes an empty `tensorrt` package
            missing.append(f"only the type stubs (tensorrt-stubs) are installed, not TensorRT: {_INSTALL}")
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


@dataclass(frozen=True)
class BuildSettings:
    """Everything the builder is told; recorded verbatim in the sidecar."""

    profile: BatchProfile
    input_shape: tuple[int, ...]  # (C, H, W)
    precision: str = "fp32"  # fp32 | fp16
    workspace_bytes: int = 4 << 30


def build_engine(onnx_path: Path, plan_path: Path, settings: BuildSettings, *,
                 timing_cache: Path | None = None) -> dict[str, Any]:
    """Build ``plan_path`` from ``onnx_path``; write the sidecar ``<plan>.json``; return its contents.

    ``onnx_path`` must already be FP16 for an FP16 engine on TensorRT >= 11 (see module docstring).
    """
    require_tensorrt()
    import tensorrt as trt
    import torch

    strongly_typed = major_version() >= 11
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        detail = "; ".join(errors) or "no detail"
        raise UserError(f"{onnx_path.name}: TensorRT's ONNX parser failed: {detail}")
    config = _builder_config(builder, settings, strongly_typed)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # a cache from another GPU or version
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path.name} (its log above says why)")
    plan_path.write_bytes(bytes(plan))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    major, minor = torch.cuda.get_device_capability()
    sidecar = {
        "tensorrt_version": str(trt.__version__),
        "cuda_version": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "builder": {"profile": str(settings.profile), "input_shape": list(settings.input_shape),
                    "precision": settings.precision, "workspace_bytes": settings.workspace_bytes,
                    "strongly_typed": strongly_typed,
                    "fp16_flag": settings.precision == "fp16" and not strongly_typed,
                    "tf32": settings.precision != "fp32",  # cleared for strict fp32 only
                    "timing_cache": timing_cache.name if timing_cache is not None else None},
        "onnx": {"path": onnx_path.name, "sha256": sha256_file(onnx_path)},
    }
    sidecar_path(plan_path).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


def _builder_config(builder: trt.Builder, settings: BuildSettings,
                    strongly_typed: bool) -> trt.IBuilderConfig:
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    if settings.precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    shapes = [trt.Dims([batch, *settings.input_shape]) for batch in
              (settings.profile.min, settings.profile.opt, settings.profile.max)]
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    return config


def sidecar_path(plan_path: Path) -> Path:
    return plan_path.with_name(plan_path.name + ".json")


class TensorRTRunner(Runner):
    """A serialized engine (plan) run with torch CUDA tensors as its input and output buffers."""

    backend = "tensorrt"

    def __init__(self, plan_path: Path) -> None:
        require_tensorrt()
        import tensorrt as trt
        import torch

        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if engine is None:
            built = _read_sidecar(plan_path)
            here = f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"
            there = f"TensorRT {built.get('tensorrt_version', '?')} on {built.get('gpu', '?')}"
            raise UserError(f"{plan_path}: {here} cannot load this plan (built with {there})",
                            hint="rebuild it here with `xbuild export --trt`")
        self.engine = engine
        self.context = engine.create_execution_context()
        inputs, self._outputs, profile = [], [], None
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(d if d >= 0 else None for d in _dims(engine.get_tensor_shape(name)))
                inputs.append(TensorSpec(name, str(dtype), shape))
                low, opt, high = engine.get_tensor_profile_shape(name, 0)
                profile = BatchProfile(low[0], opt[0], high[0])
            else:  # the torch dtype of its buffer, worked out once here rather than on every call
                self._outputs.append((name, torch.from_numpy(np.empty(0, dtype=dtype)).dtype))
        super().__init__(inputs, profile, Path(plan_path).name)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        keep = []  # hold the device buffers until the stream is done
        for name, array in feeds.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array)).cuda()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        for name, dtype in self._outputs:
            shape = _dims(self.context.get_tensor_shape(name))
            results[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.current_stream()  # the stream the copies above were queued on: no race
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return {name: tensor.float().cpu().numpy() for name, tensor in results.items()}


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (-1 marks a dynamic dimension)."""
    return tuple(dims[i] for i in range(len(dims)))


def _read_sidecar(plan_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(sidecar_path(Path(plan_path)).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
