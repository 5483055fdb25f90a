"""Which artifacts ``--explain`` runs on, and with what inputs: the glue between a verification's
result (:mod:`.checks`) and the block-by-block diagnosis (:mod:`.explain`).

A failed comparison is always explained; ``--explain`` explains every artifact. fp32 and fp16 are
explained on the seeded input of the largest checked batch up to :data:`EXPLAIN_BATCH`, int8 on
the first held-out images. What cannot be explained (a TensorRT plan, a file without the block
map) is a note, never an error: the verdict is already made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporters.calibration import HeldOut
from exporters.contract import ComputePrecision
from exporters.verify.checks import Target, VerificationResult
from exporters.verify.compare import Tolerance
from exporters.verify.explain import explain
from exporters.verify.seeded import seeded_input
from xception_build.errors import UserError
from xception_build.model import XceptionNet
from xception_build.spec import Spec

#: images per diagnostic run: enough samples for a per-sample error, small enough to be quick
EXPLAIN_BATCH = 8


def explain_targets(result: VerificationResult, targets: Sequence[Target], model: XceptionNet, *,
                    batches: Sequence[int], seed: int, tolerances: Mapping[ComputePrecision, Tolerance],
                    held_out: HeldOut | None, spec: Spec | None = None, always: bool = False) -> None:
    """Explain, block by block, every ONNX target whose comparison failed (every one with ``always``)."""
    for target in targets:
        failed = any(c.failed for c in result.comparisons if c.artifact == target.name)
        if not (always or failed):
            continue
        if target.kind != "onnx":
            result.notes.append(f"{target.name}: a TensorRT plan is explained through the ONNX it was built from "
                                "(export with --onnx --trt, then --explain)")
            continue
        if target.precision == "int8":
            if held_out is None:
                result.notes.append(f"{target.name}: cannot explain without its held-out images")
                continue
            inputs = held_out.images[:min(max(batches), len(held_out.images))]
        else:
            batch = max([b for b in batches if b <= EXPLAIN_BATCH] or [min(batches)])
            inputs = seeded_input(seed, batch, model.plan.input_shape.as_tuple())
        try:
            result.explanations.append(explain(model, target.path, target.precision, inputs,
                                               tolerance=tolerances[target.precision], spec=spec,
                                               verdict=_verdict_lines(result, target.name)))
        except UserError as exc:
            result.notes.append(f"{target.name}: cannot explain: {exc.message}")


def _verdict_lines(result: VerificationResult, artifact: str) -> list[str]:
    """What each comparison of ``artifact`` concluded and the numbers it rests on: its failures, or
    the statistics it was judged by (``failed on onnxruntime-cpu: accuracy drop 12.0 points ...``)."""
    lines = []
    for comp in (c for c in result.comparisons if c.artifact == artifact):
        where = f"{comp.verdict} on {comp.backend}"
        for out in comp.outputs:
            if out.failures:
                lines += [f"{where}: {why}" for why in out.failures]
            else:
                lines += [f"{where}: {s.describe()}" for s in out.statistics]
        if comp.not_judged is not None:
            lines.append(f"{where}: {comp.not_judged}")
    return lines
