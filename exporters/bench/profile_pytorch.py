"""Time per block under PyTorch eager: ``torch.profiler`` with one range per planned block.

For the profiled calls only, a forward pre-hook and hook on every planned block module open and
close a ``record_function`` range named after it (blocks do not nest, so a block's time is its
range's total); the head's range runs from the last block's end to the end of the forward (the
exit flow's final activation, pooling, the classifier). The hooks are removed afterwards. Each call
is a range of its own; the ops directly inside it but outside every block range are listed as
unattributed, and the rest of the call's range is the forward's own Python (the overhead).

On CUDA a block's time is the device time of the kernels launched inside its range (kineto); that
path has not been run (no GPU was lent while it was written).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from exporters.backends import PytorchBackend
from exporters.bench.profiled import KernelTime, ProfiledCall, ProfileJob, timed_calls, warm_up
from exporters.contract import HEAD, INPUT_NAME
from xception_build.training import synchronize

if TYPE_CHECKING:
    from torch import nn
    from torch.autograd.profiler_util import FunctionEvent

_BLOCK = "xbuild.block:"
_CALL = "xbuild.call"


def profile_pytorch(job: ProfileJob) -> list[ProfiledCall]:
    """Profile ``job.model`` eager on ``job.backend``'s device, as the bench times it (TF32 as users run it)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    backend = job.backend
    assert isinstance(backend, PytorchBackend) and not backend.compile  # the registry says which backends
    device = torch.device(backend.device)
    runner = backend.runner(job.model, job.model.plan.input_shape.as_tuple(), strict_fp32=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with runner:
        forward = runner.timed_call({INPUT_NAME: np.ascontiguousarray(job.inputs, dtype=np.float32)})

        def call() -> object:
            with record_function(_CALL):
                result = forward()
                synchronize(device)
            return result

        def sync() -> None:
            synchronize(device)

        warm_up(forward, sync, job.settings)
        prof = profile(activities=activities)
        with _block_ranges(job.model):
            with _quiet_stderr():
                prof.start()
            try:
                walls = timed_calls(call, sync, job.settings)
            finally:
                with _quiet_stderr():
                    prof.stop()
        events = list(prof.events())
    return _calls(events, walls, cuda=device.type == "cuda")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Kineto writes a line to the process's stderr as the profiler starts and as it stops
    ("USDT: ... profiler_start"): not for our users, whose stderr carries the progress bar."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def _block_ranges(model: nn.Module) -> Iterator[None]:
    """Hooks that open a range as each planned block starts and close it as it ends; removed on exit."""
    from torch.profiler import record_function

    names = [b.module_name for b in model.plan.blocks]  # type: ignore[union-attr]
    open_ranges: dict[str, record_function] = {}

    def start(name: str) -> None:
        span = record_function(_BLOCK + name)
        span.__enter__()
        open_ranges[name] = span

    def end(name: str) -> None:
        span = open_ranges.pop(name, None)
        if span is not None:
            span.__exit__(None, None, None)

    def before(name: str) -> Callable[..., None]:
        return lambda _module, _args: start(name)

    def after(name: str) -> Callable[..., None]:
        def hook(_module: object, _args: object, _output: object) -> None:
            end(name)
            if name == names[-1]:
                start(HEAD)  # the head: from the last block's end to the end of the forward
        return hook

    handles = []
    try:
        for name in names:
            module = model.get_submodule(name)
            handles += [module.register_forward_pre_hook(before(name)), module.register_forward_hook(after(name))]
        handles.append(model.register_forward_hook(lambda _m, _a, _o: end(HEAD)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name in list(open_ranges):  # a forward that raised leaves its ranges open
            end(name)


def _seconds(event: FunctionEvent, cuda: bool) -> float:
    if cuda:
        return float(event.device_time_total) * 1e-6
    return float(event.time_range.elapsed_us()) * 1e-6


def _calls(events: list[FunctionEvent], walls: list[float], *, cuda: bool) -> list[ProfiledCall]:
    spans = sorted((e for e in events if e.name == _CALL), key=lambda e: e.time_range.start)
    if len(spans) != len(walls):
        raise RuntimeError(f"torch.profiler recorded {len(spans)} calls for {len(walls)} timed calls")
    calls = []
    for span, wall in zip(spans, walls, strict=True):
        kernels = []
        for child in span.cpu_children:
            if child.name.startswith(_BLOCK):
                owner = child.name[len(_BLOCK):]
                kernels.append(KernelTime(owner, "block range", _seconds(child, cuda), owner, "range"))
            else:
                kernels.append(KernelTime(child.name, "op", _seconds(child, cuda), None))
        overhead = float(span.time_range.elapsed_us()) * 1e-6 - sum(k.seconds for k in kernels)
        calls.append(ProfiledCall(wall, tuple(kernels), overhead))
    return calls
