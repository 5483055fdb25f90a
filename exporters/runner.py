"""Runners: one ``infer(feeds) -> outputs`` signature for PyTorch, ONNX Runtime and TensorRT.

The split follows Polygraphy: a runner only runs; comparing is :mod:`exporters.verify.compare`'s
job. A runner has a lifecycle, used as a context manager: ``load`` (open the session, deserialize
the engine, compile the model), ``infer`` any number of times, ``release`` (free it again). The
base class checks input names, dtypes, shapes and the batch profile for every backend, so a
wrong feed gives the same clean :class:`UserError` whatever runs it and a new backend is small.

Backend families live beside their exporters (``exporters.onnx.runtime``,
``exporters.tensorrt.runtime``); :class:`TorchRunner`, the reference, is here.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from exporters.contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    BackendName,
    BatchProfile,
    ComputePrecision,
    Device,
    TensorSpec,
)
from xception_build.errors import UserError

if TYPE_CHECKING:
    from typing import Self

    import torch
    from torch import nn


class Runner(ABC):
    """Base of every backend's runner: the lifecycle, and feeds validated before :meth:`_infer`."""

    def __init__(self, backend: BackendName, source: str) -> None:
        self.backend = backend
        self.source = source  # what the runner runs, for messages (a file name, or "pytorch")
        self.inputs: tuple[TensorSpec, ...] = ()
        self.profile: BatchProfile | None = None
        #: set by :meth:`_load` where the backend computes at another precision than the artifact's
        #: (None: the artifact's own); the verification picks the tolerance by it
        self.compute_precision: ComputePrecision | None = None
        self.loaded = False

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.load()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    def load(self) -> None:
        """Make the runner ready (idempotent); sets :attr:`inputs` and :attr:`profile`."""
        if not self.loaded:
            self.inputs, self.profile = self._load()
            self.loaded = True

    def release(self) -> None:
        """Free what :meth:`load` took (sessions, engines, device memory); idempotent."""
        if self.loaded:
            self.loaded = False
            self._release()

    # -- running ---------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; raises :class:`UserError` for feeds the artifact cannot take."""
        self.check_feeds(feeds)
        return self._infer(feeds)

    def timed_call(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """One call as ``xbuild bench`` times it: what a Python caller of this backend pays per batch."""
        self.check_feeds(feeds)
        return lambda: self._infer(feeds)

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`UserError` for feeds the artifact cannot take (and misuse for an unloaded runner)."""
        if not self.loaded:
            raise RuntimeError(f"{type(self).__name__} for {self.source} is not loaded: use it in a `with` block")
        expected = [spec.name for spec in self.inputs]
        if sorted(feeds) != sorted(expected):
            raise UserError(f"{self.source}: inputs {sorted(feeds)} given, the model takes {expected}")
        for spec in self.inputs:
            array = feeds[spec.name]
            if str(array.dtype) != spec.dtype:
                raise UserError(f"{self.source}: input {spec.name!r} has dtype {array.dtype}, "
                                f"the model takes {spec.dtype}")
            wanted = tuple("N" if d is None else d for d in spec.shape)
            if array.ndim != len(spec.shape) or any(
                    d is not None and d != a for d, a in zip(spec.shape, array.shape, strict=True)):
                raise UserError(f"{self.source}: input {spec.name!r} has shape {tuple(array.shape)}, "
                                f"the model takes {wanted}")
            batch = int(array.shape[0]) if array.ndim else 0
            if self.profile is not None and not self.profile.contains(batch):
                raise UserError(f"{self.source}: batch {batch} is outside the batch profile "
                                f"{self.profile} (MIN:OPT:MAX) the artifact was built for",
                                hint="re-export with a wider --batch MIN:OPT:MAX")

    @abstractmethod
    def _load(self) -> tuple[tuple[TensorSpec, ...], BatchProfile | None]:
        """Open the artifact; return its inputs and the batch profile it accepts (None: any)."""

    @abstractmethod
    def _release(self) -> None:
        """Drop what :meth:`_load` opened."""

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds; return float32 numpy arrays by output name."""


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Turn TF32 off while the reference runs: it would blur a strict fp32 comparison on Ampere+."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


_TORCH_BACKENDS: dict[tuple[bool, Device], BackendName] = {
    (False, "cpu"): "pytorch-cpu", (False, "cuda"): "pytorch-cuda",
    (True, "cpu"): "pytorch-compile-cpu", (True, "cuda"): "pytorch-compile-cuda",
}


class TorchRunner(Runner):
    """A PyTorch model in eval mode, eager or under ``torch.compile``.

    Eager on the CPU it is the reference every artifact is compared against. ``strict_fp32`` turns
    TF32 off while it runs (on by default in cuDNN on Ampere and later): the reference needs it;
    a benchmark of what users run by default does not.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], *, device: Device = "cpu",
                 compile: bool = False, strict_fp32: bool = True) -> None:
        super().__init__(_TORCH_BACKENDS[(compile, device)], "pytorch")
        self.model = model
        self.input_size = input_size
        self.device = device
        self.compile = compile
        self.strict_fp32 = strict_fp32
        self._run: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _load(self) -> tuple[tuple[TensorSpec, ...], BatchProfile | None]:
        import torch

        model = self.model.eval().to(self.device)
        self._run = torch.compile(model) if self.compile else model
        return (TensorSpec(INPUT_NAME, "float32", (None, *self.input_size)),), None

    def _release(self) -> None:
        if self.compile:
            import torch

            torch._dynamo.reset()  # drop the compiled graphs and their caches
        self._run = None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        assert self._run is not None  # loaded: checked by infer / timed_call
        with strict_fp32() if self.strict_fp32 else contextlib.nullcontext(), torch.inference_mode():
            return self._run(x)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_NAME])).to(self.device)
        return {OUTPUT_NAME: self._forward(x).float().cpu().numpy()}

    def timed_call(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """The input stays on the device and the logits too: what a PyTorch user's forward costs."""
        import torch

        self.check_feeds(feeds)
        x = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_NAME])).to(self.device)
        return lambda: self._forward(x)
