"""Time per block under ONNX Runtime: its per-node profile, mapped to the spec's blocks.

The session is the runner's (:func:`exporters.onnx.runtime.session_options`: all graph
optimisations, common-subexpression elimination off, the same threads) with ONNX Runtime's
profiler on. It runs the file's :func:`~exporters.onnx.blocks.tagged_copy`, whose node and tensor
names carry their block's tag, so that the nodes of the optimised graph (fused, renamed: an int8
file's ``DequantizeLinear -> Conv -> QuantizeLinear`` is one ``QLinearConv``) still say whose they
are. Renaming changes no computation, and each run checks it: the file and its tagged copy must
optimise to the same kernels (op types and counts), or the profile is refused.

Per call, ONNX Runtime's trace has one ``model_run`` span and one ``<node>_kernel_time`` span per
node of the optimised graph; the span minus its nodes is the executor's own work (the overhead).
"""

from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from exporters.bench.profiled import KernelTime, ProfiledCall, ProfileJob, tagged_file, timed_calls, warm_up
from exporters.contract import INPUT_NAME
from exporters.onnx.blocks import (
    Attribution,
    GraphNode,
    attribute,
    untagged,
)
from exporters.onnx.export import serialize
from exporters.onnx.runtime import PROVIDERS, session_options

if TYPE_CHECKING:
    import onnx



def profile_onnxruntime(job: ProfileJob) -> list[ProfiledCall]:
    """Run the ``job.precision`` ONNX file of ``job.files`` under ONNX Runtime's profiler."""
    path = job.files.onnx(job.precision)
    owners, tagged = tagged_file(path, job.model.plan)
    threads = job.settings.threads or 0
    provider = PROVIDERS[job.backend.device]
    with tempfile.TemporaryDirectory(prefix="xbuild-profile-") as name:
        folder = Path(name)
        copy = folder / "tagged.onnx"
        copy.write_bytes(serialize(tagged))
        graph = _optimised(copy, folder / "tagged.optimised.onnx", threads, provider)
        _same_kernels(_optimised(path, folder / "file.optimised.onnx", threads, provider), graph, path)
        trace, walls = _profile(copy, folder, job, threads, provider)
    nodes = [GraphNode(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in graph.graph.node]
    owned = attribute(nodes, owners)
    op_types = {n.name: n.op_type for n in nodes}
    return _calls(trace, walls, owned, op_types)


def _optimised(path: Path, target: Path, threads: int, provider: str) -> onnx.ModelProto:
    """The graph ONNX Runtime runs for ``path`` with the runner's options (written, never run)."""
    import onnx
    import onnxruntime as ort

    options = session_options(threads)
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(path), sess_options=options, providers=[provider])
    return onnx.load(str(target))


def _same_kernels(original: onnx.ModelProto, tagged: onnx.ModelProto, path: Path) -> None:
    def kernels(proto: onnx.ModelProto) -> collections.Counter[tuple[str, str]]:
        return collections.Counter((n.domain, n.op_type) for n in proto.graph.node)

    if kernels(original) != kernels(tagged):
        difference = (kernels(original) - kernels(tagged)) + (kernels(tagged) - kernels(original))
        raise RuntimeError(f"{path.name}: ONNX Runtime optimises the block-tagged copy into other kernels than "
                           f"the file itself ({', '.join(op for _, op in sorted(difference))}): its per-node "
                           "times would not be the file's")


def _profile(copy: Path, folder: Path, job: ProfileJob, threads: int, provider: str
             ) -> tuple[list[dict[str, object]], list[float]]:
    """The trace's events and each timed call's wall-clock seconds (the first calls warm up)."""
    import numpy as np
    import onnxruntime as ort

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "ort-profile")
    session = ort.InferenceSession(str(copy), sess_options=options, providers=[provider])
    feeds = {INPUT_NAME: np.ascontiguousarray(job.inputs, dtype=np.float32)}
    outputs = [o.name for o in session.get_outputs()]

    def call() -> object:
        return session.run(outputs, feeds)

    def sync() -> None:
        return None  # session.run returns host arrays: the work is done when it returns

    warm_up(call, sync, job.settings)
    walls = timed_calls(call, sync, job.settings)
    events = json.loads(Path(session.end_profiling()).read_text())
    return [e for e in events if isinstance(e, dict)], walls


_KERNEL = "_kernel_time"


def _calls(events: list[dict[str, object]], walls: list[float], owned: dict[str, tuple[str, Attribution]],
           op_types: dict[str, str]) -> list[ProfiledCall]:
    """Split the trace by call (its ``model_run`` spans, of which the last ``len(walls)`` were timed)."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: _us(e, "ts"))[-len(walls):]
    if len(runs) != len(walls):
        raise RuntimeError(f"ONNX Runtime's trace has {len(runs)} model_run spans for {len(walls)} timed calls")
    nodes = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(_KERNEL)),
                   key=lambda e: _us(e, "ts"))
    calls = []
    for run, wall in zip(runs, walls, strict=True):
        start, end = _us(run, "ts"), _us(run, "ts") + _us(run, "dur")
        kernels = []
        for event in nodes:
            if start <= _us(event, "ts") <= end:
                name = str(event["name"])[:-len(_KERNEL)]
                args = event.get("args")
                op = op_types.get(name) or (str(args.get("op_name", "")) if isinstance(args, dict) else "")
                owner, via = owned.get(name) or (None, "")
                kernels.append(KernelTime(untagged(name), op, _us(event, "dur") * 1e-6, owner, via))
        overhead = (end - start) * 1e-6 - sum(k.seconds for k in kernels)
        calls.append(ProfiledCall(wall, tuple(kernels), overhead))
    return calls


def _us(event: dict[str, object], key: str) -> int:
    value = event.get(key, 0)
    return int(value) if isinstance(value, (int, float, str)) else 0
