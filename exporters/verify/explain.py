"""Block by block: where an artifact's numbers leave the PyTorch reference's (``--explain``).

A failed verification only says that the logits differ; the cause is one block (a weight that
drifted, an fp16 overflow, a badly quantized layer), and every block after it inherits the damage.
So the same inputs go through the reference, with a forward hook on every planned block, and
through a diagnostic copy of the artifact whose block outputs are extra graph outputs (located by
the ``xbuild.blocks`` map the export recorded). Each block is judged like a final output
(:mod:`exporters.verify.compare`: scale-relative error, mean per-sample cosine), which gives the
error curve through the network and its first row that leaves the tolerance. The classifier's
output is the last row, so a fault in the head is found too.

int8 is judged by the class, on held-out images, not block by block: no fixed cosine says that a
block is broken. So its findings start with what the artifact's verdict rests on (what failed,
with its numbers) and rank the blocks by how much each adds to the loss of cosine through the
network; the block table marks those contributors.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporters.contract import HEAD, INPUT_NAME, OUTPUT_NAME, Precision
from exporters.onnx.blocks import read_blocks, with_block_outputs
from exporters.onnx.export import load_onnx, serialize
from exporters.onnx.runtime import OnnxRuntimeRunner
from exporters.runner import strict_fp32
from exporters.verify.compare import Tolerance, sample_cosines, scaled_errors
from xception_build.errors import UserError
from xception_build.tables import render_table

if TYPE_CHECKING:
    from xception_build.model import XceptionNet
    from xception_build.spec import Spec

FP16_MAX = 65504.0  # the largest finite float16
LOSS_FLOOR = 1e-9  # the sensitivity's floor where the first block is exact (kept in float)


@dataclass(frozen=True)
class BlockRow:
    """One block's output, candidate against reference, and where the block is written in the spec."""

    module: str  # e.g. "middle.blocks.3"
    spec_path: str  # e.g. "middle.blocks[0]"
    repeat: tuple[int, int]  # (copy, of copies)
    file: str | None  # the spec file and line of the entry, when the spec's source is known
    line: int | None
    error: float  # worst sample's max|diff| / max|ref|; inf for non-finite candidates
    cosine: float  # mean per-sample cosine; 0 for non-finite candidates
    peak: float  # max |reference|
    candidate_peak: float  # max |candidate| (inf when non-finite)
    finite: bool
    overflow: bool  # fp16 only: the reference or the candidate beyond the fp16 range
    passed: bool

    def where(self) -> str:
        """``middle.blocks.3 = middle.blocks[0] (repeat 4/8), specs/x.yaml line 39``."""
        text = self.module if self.module == self.spec_path else f"{self.module} = {self.spec_path}"
        if self.repeat[1] > 1:
            text += f" (repeat {self.repeat[0]}/{self.repeat[1]})"
        if self.file is not None:
            text += f", {self.file}" + (f" line {self.line}" if self.line is not None else "")
        elif self.line is not None:
            text += f", spec line {self.line}"
        return text

    def loss(self, by_error: bool) -> float:
        """What the sensitivity ranking adds up: the error, or 1 - cosine (inf when non-finite)."""
        value = self.error if by_error else 1.0 - self.cosine
        return value if self.finite and math.isfinite(value) else math.inf


@dataclass
class Explanation:
    """The per-block error curve of one artifact on one batch, and what it says."""

    artifact: str
    precision: Precision
    tolerance: Tolerance
    batch: int
    rows: list[BlockRow]
    unmapped: list[str] = field(default_factory=list)  # planned blocks the file's map does not locate
    verdict: list[str] = field(default_factory=list)  # int8: what the artifact's verdict rests on, one line each

    @property
    def first_divergence(self) -> BlockRow | None:
        """The first block, in forward order, that leaves the tolerance."""
        return next((r for r in self.rows if not r.passed), None)

    @property
    def first_overflow(self) -> BlockRow | None:
        """fp16: the first block whose activations leave the fp16 range or turn non-finite."""
        return next((r for r in self.rows if r.overflow), None) if self.precision == "fp16" else None

    def sensitivity(self, top: int = 5) -> list[tuple[BlockRow, float]]:
        """The ``top`` blocks that add most to the loss along the network, with how much each adds.

        The loss is the error where the tolerance bounds it, else 1 - cosine (int8 is judged by the
        class, and its elementwise max error is set by single rounding outliers). What a block adds
        is how much it multiplies the loss it receives: ln((loss + floor) / (previous + floor)),
        the floor being the first block's own loss (the input's quantization). A difference of
        losses would blame the blocks that merely amplify damage done before them: one block's
        weights doubled in int8 takes the cosine of its output to 0.90, and the head, fed that,
        loses more cosine in absolute terms (0.57 to 0.36) though it is intact. The additions add
        up to ln((last loss + floor) / floor)."""
        by_error = self.tolerance.max_error is not None
        losses = [max(row.loss(by_error), 0.0) for row in self.rows]
        floor = max(losses[0] if losses and math.isfinite(losses[0]) else 0.0, LOSS_FLOOR)
        added: list[tuple[BlockRow, float]] = []
        previous = 0.0
        for row, loss in zip(self.rows, losses, strict=True):
            if math.isinf(loss):  # the first non-finite block takes the blame, not those that inherit it
                added.append((row, 0.0 if math.isinf(previous) else math.inf))
            elif math.isinf(previous):
                added.append((row, 0.0))
            else:
                added.append((row, math.log((loss + floor) / (previous + floor))))
            previous = loss
        return sorted(added, key=lambda pair: -pair[1])[:top]

    def losses(self) -> dict[str, tuple[float, float]]:
        """Per block: (the loss it receives, the loss it hands on), as the sensitivity ranks them."""
        by_error = self.tolerance.max_error is not None
        values = [max(row.loss(by_error), 0.0) for row in self.rows]
        return {row.module: (before, after) for row, before, after in zip(self.rows, [0.0, *values], values,
                                                                           strict=False)}

    def findings(self, top: int = 5) -> list[str]:
        """One line per finding: the first divergence; for fp16 the first overflow; for int8 its
        verdict (what failed, with the numbers) and the blocks that lose most."""
        first = self.first_divergence
        if self.precision == "int8":  # no per-block tolerance: the verdict first, then where it is lost
            lines = [f"int8 verdict {line}" for line in self.verdict]
            lines += [f"first divergence: {first.where()}, {_metrics(first)}"] if first is not None else []
        else:
            lines = [f"first divergence: {first.where()}, {_metrics(first)}" if first is not None else
                     f"no block leaves the {self.precision} tolerance"]
        overflow = self.first_overflow
        if overflow is not None:
            lines.append(f"first fp16 overflow: {overflow.where()}, reference peak {overflow.peak:.4g}, "
                         f"candidate peak {overflow.candidate_peak:.4g} (fp16 max {FP16_MAX:g})")
        if self.precision == "int8":
            losses = self.losses()
            lines += [f"int8 loss #{rank}: {row.where()}, 1 - cosine {losses[row.module][0]:.3g} -> "
                      f"{losses[row.module][1]:.3g} ({_metrics(row)})"
                      for rank, (row, _) in enumerate(self.sensitivity(top), 1)]
        if self.unmapped:
            lines.append(f"not located in the file: {', '.join(self.unmapped)}")
        return lines

    def table(self, top: int = 5) -> str:
        """The whole curve, one row per block in forward order (peak: the reference's max |value|).

        For int8 the last column ranks the ``top`` blocks that add most to the loss (``#1`` ...)
        instead of a per-block verdict, which int8 does not have."""
        ranks = {row.module: rank for rank, (row, _) in enumerate(self.sensitivity(top), 1)}
        header = ("block", "spec", "repeat", "line", "error", "cosine", "peak",
                  "loss rank" if self.precision == "int8" else "result")
        rows = [(r.module, r.spec_path, f"{r.repeat[0]}/{r.repeat[1]}", "-" if r.line is None else str(r.line),
                 f"{r.error:.2e}", f"{r.cosine:.7f}", f"{r.peak:.3g}",
                 _rank(r, ranks.get(r.module)) if self.precision == "int8" else _result(r)) for r in self.rows]
        return "\n".join(render_table(header, rows, right=(4, 5, 6)))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (non-finite numbers become ``None``; ``finite`` says why)."""
        first, overflow = self.first_divergence, self.first_overflow
        losses = self.losses()
        return {"artifact": self.artifact, "precision": self.precision, "batch": self.batch,
                "tolerance": self.tolerance.to_dict(), "unmapped": list(self.unmapped), "verdict": list(self.verdict),
                "first_divergence": first.module if first else None,
                "first_overflow": overflow.module if overflow else None,
                "sensitivity": [{"module": r.module, "added": _json(a), "loss_before": _json(losses[r.module][0]),
                                 "loss_after": _json(losses[r.module][1])} for r, a in self.sensitivity()]
                if self.precision == "int8" else None,
                "blocks": [{k: _json(v) if isinstance(v, float) else list(v) if isinstance(v, tuple) else v
                            for k, v in asdict(r).items()} for r in self.rows]}


def _rank(row: BlockRow, rank: int | None) -> str:
    if not row.finite:
        return "NON-FINITE" + (f" #{rank}" if rank is not None else "")
    return "-" if rank is None else f"#{rank}"


def _result(row: BlockRow) -> str:
    verdict = "ok" if row.passed else "FAIL" if row.finite else "NON-FINITE"
    return verdict + (" fp16-overflow" if row.overflow else "")


def _metrics(row: BlockRow) -> str:
    return "non-finite values" if not row.finite else f"cosine {row.cosine:.6g}, error {row.error:.3g}"


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def explain(model: XceptionNet, artifact_path: str | Path, precision: Precision, inputs: np.ndarray, *,
            tolerance: Tolerance, spec: Spec | None = None, threads: int = 0,
            verdict: Sequence[str] = ()) -> Explanation:
    """Run ``inputs`` through the reference and the artifact, and judge every block's output.

    ``model`` is the eval-mode reference; ``spec`` (default: the model's own) names spec lines;
    ``verdict`` says what the artifact's verdict rests on (int8 findings start with it).
    Raises :class:`UserError` for a file without a block map or whose map does not fit it.
    """
    path = Path(artifact_path)
    proto = load_onnx(path)
    blocks = read_blocks(proto)
    if not blocks:
        raise UserError(f"{path}: has no block map (the 'xbuild.blocks' metadata that says which tensor each "
                        "spec block writes), so its blocks cannot be told apart; only ONNX files exported "
                        "by xbuild can be explained", hint="export the model with xbuild export")
    planned = {b.module_name: b for b in model.plan.blocks}
    foreign = [b.module for b in blocks if b.module not in planned]
    if foreign:
        raise UserError(f"{path}: its block map names {', '.join(foreign[:3])}, which spec "
                        f"'{model.plan.name}' does not have: the file was exported from another spec")
    produced = {out for node in proto.graph.node for out in node.output}
    missing = [f"{b.module} -> {b.output!r}" for b in blocks if b.output not in produced]
    if missing:
        raise UserError(f"{path}: its block map names tensors the graph does not have ({', '.join(missing[:3])}); "
                        "the file was edited after export", hint="re-export it with xbuild export")
    order = {name: index for index, name in enumerate(planned)}
    blocks.sort(key=lambda b: order[b.module])
    diagnostic, tensors = with_block_outputs(proto, blocks)
    with tempfile.TemporaryDirectory(prefix="xbuild-explain-") as folder:  # never beside the artifact
        copy = Path(folder) / path.name
        copy.write_bytes(serialize(diagnostic))
        with OnnxRuntimeRunner(copy, threads=threads) as runner:  # first: it rejects feeds the file cannot take
            outputs = runner.infer({INPUT_NAME: inputs})
    reference = _reference(model, [b.module for b in blocks], inputs)
    head_file, head_line = _head_place(spec if spec is not None else model.spec)
    rows = []
    for block, tensor in [*((planned[b.module], t) for b, t in zip(blocks, tensors, strict=True)), (None, OUTPUT_NAME)]:
        module, spec_path = (block.module_name, block.spec_path) if block else (HEAD, HEAD)
        file, line = (block.file, block.line) if block else (head_file, head_line)
        rows.append(_judge(module, spec_path, block.repeat if block else (1, 1), file, line,
                           reference[module], outputs[tensor], precision, tolerance, path))
    mapped = {b.module for b in blocks}
    return Explanation(path.name, precision, tolerance, len(inputs), rows,
                       [name for name in planned if name not in mapped], list(verdict))


def _head_place(spec: Spec | None) -> tuple[str | None, int | None]:
    """(file, line) the head is written at (the blocks carry theirs in the plan)."""
    location = spec.source.location_of((HEAD,)) if spec is not None and spec.source is not None else None
    return (location.file, location.line) if location is not None else (None, None)


def _reference(model: XceptionNet, modules: list[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's output of every module in ``modules``, and its logits under :data:`HEAD`.

    Outputs are cloned as the hooks see them: a later in-place op (a flow's final activation, the
    next block's first activation) would otherwise change them before they are read."""
    import torch

    captured: dict[str, np.ndarray] = {}

    def keep(name: str) -> Callable[[torch.nn.Module, object, torch.Tensor], None]:
        def hook(_module: torch.nn.Module, _args: object, output: torch.Tensor) -> None:
            captured[name] = output.detach().clone().float().cpu().numpy()
        return hook

    handles = [model.get_submodule(name).register_forward_hook(keep(name)) for name in modules]
    try:
        device = next(model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(device)
        with strict_fp32(), torch.inference_mode():
            captured[HEAD] = model.eval()(x).float().cpu().numpy()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _judge(module: str, spec_path: str, repeat: tuple[int, int], file: str | None, line: int | None,
           ref: np.ndarray, cand: np.ndarray, precision: Precision, tolerance: Tolerance, path: Path) -> BlockRow:
    if ref.shape != cand.shape:
        raise UserError(f"{path}: the tensor its block map gives for {module} has shape {tuple(cand.shape)}, "
                        f"the reference's block {tuple(ref.shape)}: the file was not exported from this model")
    finite = bool(np.isfinite(cand).all())
    peak = float(np.abs(ref).max(initial=0.0))
    candidate_peak = float(np.abs(cand).max(initial=0.0)) if finite else math.inf
    if finite:
        error = float(scaled_errors(ref, cand).max(initial=0.0))
        cosine = float(sample_cosines(ref, cand).mean())
    else:
        error, cosine = math.inf, 0.0
    passed = (finite and (tolerance.max_error is None or error <= tolerance.max_error)
              and (tolerance.min_cosine is None or cosine >= tolerance.min_cosine))
    overflow = precision == "fp16" and (not finite or max(peak, candidate_peak) > FP16_MAX)
    return BlockRow(module, spec_path, repeat, file, line, error, cosine, peak, candidate_peak, finite,
                    overflow, passed)

