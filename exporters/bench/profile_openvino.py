"""Time per block under OpenVINO: its per-layer performance counters, mapped to the spec's blocks.

The IR is made as ``xbuild export --openvino`` makes it, from the file's
:func:`~exporters.onnx.blocks.tagged_copy` (node and tensor names carrying their block's tag), and
compiled as the runner compiles it (:func:`exporters.openvino.runtime.compile_config`: latency
hint, the same threads and inference precision) with ``PERF_COUNT`` on. The CPU plugin fuses
layers (an int8 file's FakeQuantize -> Convolution -> FakeQuantize is one int8 convolution); each
executed layer is named after one of the layers it fused, and its ``originalLayersNames`` lists
them all, so the tags still say whose it is. Layers the plugin made up (``Reorder``s of memory
layout) go to a neighbour as :func:`~exporters.onnx.blocks.attribute` decides, along the executed
graph's edges. Renaming changes no computation, and each run checks it: the IR of the file and of
its tagged copy must compile to the same executed layers (types and counts), or the profile is
refused.

OpenVINO reports each executed layer's real time per request and no span for the whole request,
so there is no overhead figure of its own: the check compares the layers' sum with the calls'
wall clock directly. Measured here (an AVX2 AMD EPYC, 2 threads, a loaded machine) the layers'
times add up to 95-111 % of the wall clock: the counters of consecutive layers overlap a little.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

from exporters.bench.profiled import KernelTime, ProfiledCall, ProfileJob, tagged_file, timed_calls, warm_up
from exporters.contract import INPUT_NAME
from exporters.onnx.blocks import GraphNode, attribute, tagged_owner, untagged
from exporters.onnx.export import serialize
from exporters.openvino.ir import openvino_core, write_ir
from exporters.openvino.runtime import compile_config

#: executed-layer statuses that took no time in the call
_IDLE = ("NOT_RUN", "OPTIMIZED_OUT")
#: layer types of the executed graph that run nothing
_NOT_EXECUTED = ("Const", "Input", "Output")


def profile_openvino(job: ProfileJob) -> list[ProfiledCall]:
    """Run the ``job.precision`` IR of ``job.files`` under OpenVINO's per-layer counters."""
    path = job.files.onnx(job.precision, openvino=True)
    owners, tagged = tagged_file(path, job.model.plan)
    core = openvino_core()
    config = {**compile_config(job.settings.openvino_precision, job.settings.threads or 0), "PERF_COUNT": "YES"}
    with tempfile.TemporaryDirectory(prefix="xbuild-profile-") as name:
        folder = Path(name)
        (folder / "tagged.onnx").write_bytes(serialize(tagged))
        write_ir(folder / "tagged.onnx", folder / "tagged.xml")
        write_ir(path, folder / "file.xml")
        compiled = core.compile_model(core.read_model(str(folder / "tagged.xml")), "CPU", config)
        original = core.compile_model(core.read_model(str(folder / "file.xml")), "CPU", config)
        _same_layers(_layers(original), _layers(compiled), path)
        del original
    layers = _layers(compiled)
    owned = attribute([node for node, _ in layers.values()], owners)
    for name, (_node, fused) in layers.items():  # a layer named after an untagged original: its fused ones say
        if name not in owned:
            found = {o for o in (tagged_owner(n, owners) for n in fused) if o is not None}
            if len(found) == 1:
                owned[name] = (found.pop(), "name")
    request = compiled.create_infer_request()
    feeds = {INPUT_NAME: job.inputs}
    records: list[list[Any]] = []

    def call() -> object:
        return request.infer(feeds)

    def sync() -> None:
        return None  # infer() returns when the request is done

    warm_up(call, sync, job.settings)

    def profiled_call() -> object:
        result = request.infer(feeds)
        records.append(list(request.profiling_info))
        return result

    walls = timed_calls(profiled_call, sync, job.settings)
    types = {name: node.op_type for name, (node, _) in layers.items()}
    calls = []
    for wall, infos in zip(walls, records, strict=True):
        kernels = []
        for info in infos:
            if str(info.status).rsplit(".", 1)[-1] in _IDLE:
                continue
            owner, via = owned.get(info.node_name) or (None, "")
            kernels.append(KernelTime(untagged(info.node_name), types.get(info.node_name, str(info.node_type)),
                                      info.real_time.total_seconds(), owner, via))
        calls.append(ProfiledCall(wall, tuple(kernels), 0.0))
    return calls


def _layers(compiled: Any) -> dict[str, tuple[GraphNode, tuple[str, ...]]]:
    """The executed graph: each layer as a :class:`GraphNode` (its edges by layer name) with the names
    of the layers it fused."""
    ops = compiled.get_runtime_model().get_ordered_ops()

    def layer_type(op: Any) -> str:
        info = op.get_rt_info()
        return str(info["layerType"].astype(str)) if "layerType" in info else str(op.get_type_name())

    # constants, the input and the output are not executed: they own no time and are no one's neighbours
    executed = {op.get_friendly_name() for op in ops if layer_type(op) not in _NOT_EXECUTED}
    found: dict[str, tuple[GraphNode, tuple[str, ...]]] = {}
    for op in ops:
        name = op.get_friendly_name()
        if name not in executed:
            continue
        info = op.get_rt_info()
        fused = tuple(n for n in str(info["originalLayersNames"].astype(str)).split(",") if n) \
            if "originalLayersNames" in info else ()
        inputs = tuple(source for port in op.inputs()
                       if (source := port.get_source_output().get_node().get_friendly_name()) in executed)
        found[name] = (GraphNode(name, layer_type(op), inputs, (name,)), fused)
    return found


def _same_layers(original: dict[str, tuple[GraphNode, tuple[str, ...]]],
                 tagged: dict[str, tuple[GraphNode, tuple[str, ...]]], path: Path) -> None:
    def kinds(layers: dict[str, tuple[GraphNode, tuple[str, ...]]]) -> collections.Counter[str]:
        return collections.Counter(node.op_type for node, _ in layers.values())

    if kinds(original) != kinds(tagged):
        difference = (kinds(original) - kinds(tagged)) + (kinds(tagged) - kinds(original))
        raise RuntimeError(f"{path.name}: OpenVINO compiles the block-tagged copy into other layers than the file "
                           f"itself ({', '.join(sorted(difference))}): its per-layer times would not be the file's")
