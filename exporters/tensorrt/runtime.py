"""TensorRT: run a serialized engine (plan) with torch CUDA tensors as its input and output buffers.

After Polygraphy's ``backend/trt/runner.py``: the runner owns a CUDA stream of its own for its
lifetime and queues the copies, the inference and the read-back on it. ``enqueueV3`` on the
default stream adds device synchronisations (TensorRT's documentation warns of it), which would
also make the bench's TensorRT latencies dishonest. Every call that reports failure by its return
value is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporters.contract import BatchProfile, TensorSpec
from exporters.runner import Runner
from exporters.tensorrt.engine import read_sidecar, require_tensorrt, trt_logger
from xception_build.errors import BackendUnavailable

if TYPE_CHECKING:
    import tensorrt as trt
    import torch


class TensorRTRunner(Runner):
    """A serialized engine run on the GPU. A plan this TensorRT or GPU cannot load is
    :class:`BackendUnavailable` ("not run here, with the reason"), not a user error: the plan may
    be fine on the machine it was built for."""

    def __init__(self, plan_path: str | Path) -> None:
        super().__init__("tensorrt", Path(plan_path).name)
        self.plan_path = Path(plan_path)
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: torch.cuda.Stream | None = None
        self._outputs: list[tuple[str, torch.dtype]] = []

    def _load(self) -> tuple[tuple[TensorSpec, ...], BatchProfile | None]:
        require_tensorrt()
        import tensorrt as trt
        import torch

        runtime = trt.Runtime(trt_logger())
        engine: trt.ICudaEngine | None = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if engine is None:
            built = read_sidecar(self.plan_path)
            here = f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"
            there = f"TensorRT {built.get('tensorrt_version', '?')} on {built.get('gpu', '?')}"
            raise BackendUnavailable(f"{self.plan_path.name}: {here} cannot load this plan (built with {there})",
                                     hint="rebuild it on this machine with `xbuild export --trt`")
        context: trt.IExecutionContext | None = engine.create_execution_context()
        if context is None:
            raise BackendUnavailable(f"{self.plan_path.name}: TensorRT could not create an execution context "
                                     "(out of GPU memory?)")
        inputs: list[TensorSpec] = []
        outputs: list[tuple[str, torch.dtype]] = []
        profile = None
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(d if d >= 0 else None for d in _dims(engine.get_tensor_shape(name)))
                inputs.append(TensorSpec(name, str(dtype), shape))
                low, opt, high = engine.get_tensor_profile_shape(name, 0)
                profile = BatchProfile(low[0], opt[0], high[0])
            else:  # the torch dtype of its buffer, worked out here rather than on every call
                outputs.append((name, torch.from_numpy(np.empty(0, dtype=dtype)).dtype))
        self._engine, self._context, self._outputs = engine, context, outputs
        self._stream = torch.cuda.Stream()
        return tuple(inputs), profile

    def _release(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        # The context before the engine it came from (TensorRT's destruction order).
        self._context = None
        self._engine = None
        self._stream = None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        context, stream = self._context, self._stream
        assert context is not None and stream is not None  # loaded: checked by infer / timed_call
        keep = []  # device buffers, alive until the stream is done with them
        with torch.cuda.stream(stream):
            for name, array in feeds.items():
                tensor = torch.from_numpy(np.ascontiguousarray(array)).to("cuda", non_blocking=True)
                keep.append(tensor)
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    raise RuntimeError(f"TensorRT rejected input shape {tuple(tensor.shape)} for {name!r}")
                if not context.set_tensor_address(name, tensor.data_ptr()):
                    raise RuntimeError(f"TensorRT rejected the buffer address of input {name!r}")
            results = {}
            for name, dtype in self._outputs:
                results[name] = torch.empty(_dims(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
                if not context.set_tensor_address(name, results[name].data_ptr()):
                    raise RuntimeError(f"TensorRT rejected the buffer address of output {name!r}")
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (its log above says why)")
            host = {name: tensor.float().to("cpu", non_blocking=True) for name, tensor in results.items()}
        stream.synchronize()
        return {name: tensor.numpy() for name, tensor in host.items()}


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (-1 marks a dynamic dimension)."""
    return tuple(dims[i] for i in range(len(dims)))
