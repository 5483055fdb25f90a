"""``xbuild verify --onnx FILE --spec SPEC``: check an ``.onnx`` from anywhere against a spec and weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from exporters.backends import artifact_backends
from exporters.calibration import DataSource, load_images
from exporters.contract import META_SPEC_HASH, META_SPEC_NAME, BackendName, BatchProfile, Precision
from exporters.onnx.export import export_onnx, load_onnx, metadata_of, onnx_precision, read_profile, to_fp16
from exporters.runner import TorchRunner
from exporters.verify.checks import Target, VerificationResult, run_checks
from exporters.verify.compare import DEFAULT_TOLERANCES, tolerance_for
from exporters.verify.diagnosis import explain_targets
from exporters.verify.reference import reference_model
from xception_build.errors import UserError
from xception_build.model import XceptionNet
from xception_build.spec import Spec, load_spec, spec_hash


def verify_onnx_file(onnx_path: str | Path, spec_path: str | Path, weights: str | Path | None = None, *,
                     overrides: Sequence[str] = (), batches: Sequence[int] | None = None,
                     tolerance: Mapping[str, float] | None = None, seed: int = 0,
                     backends: Sequence[BackendName] | None = None,
                     data: DataSource | None = None, explain: bool = False,
                     judge_synthetic: bool = False) -> VerificationResult:
    """Check an ``.onnx`` from anywhere against a spec and weights; on failure, name weights that differ.

    An int8 file is judged on the held-out images of ``data`` (``--data``); without them it is not
    verified; on synthetic ones it is not judged, unless ``judge_synthetic``. ``tolerance``
    overrides bounds of the file's own precision; a backend that computes it at another precision
    (bf16) is judged by that precision's defaults."""
    onnx_path = Path(onnx_path)
    proto = load_onnx(onnx_path)
    spec = load_spec(spec_path, overrides)
    model = reference_model(spec, weights, seed)
    input_size = model.plan.input_shape.as_tuple()
    dims = [d.dim_value or None for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != len(input_size) + 1 or any(
            d is not None and d != s for d, s in zip(dims[1:], input_size, strict=True)):
        raise UserError(f"{onnx_path}: its input has shape {tuple(d or 'N' for d in dims)}, the spec's model "
                        f"takes (N, {', '.join(map(str, input_size))})")
    if backends is not None and not {b.name for b in artifact_backends("onnx")} & set(backends):
        raise UserError(f"--backend {', '.join(backends)} runs no ONNX file: nothing to verify",
                        hint=f"ONNX files run on {', '.join(b.name for b in artifact_backends('onnx'))}")
    metadata = metadata_of(proto)
    profile = read_profile(metadata, dims)
    if batches is None:
        batches = profile.check_batches() if profile is not None else (1, 2)
    precision = onnx_precision(proto)
    if data is not None and precision != "int8":
        raise UserError(f"--data goes with an int8 file; {onnx_path} is {precision}, judged on seeded inputs")
    if judge_synthetic and (data is None or not data.synthetic):
        raise UserError("--judge-synthetic goes with an int8 --onnx file and --data synthetic: real held-out images "
                        "are always judged")
    held_out = load_images(data, spec)[1] if precision == "int8" and data is not None else None
    tolerances = {**DEFAULT_TOLERANCES, precision: tolerance_for(precision, tolerance)}
    targets = [Target(onnx_path, "onnx", precision)]
    result = run_checks(TorchRunner(model, input_size), targets, batches=batches, seed=seed, backends=backends,
                        tolerances=tolerances, held_out=held_out, judge_synthetic=judge_synthetic,
                        no_held_out="an int8 file is judged on held-out images: give --data DATA")
    if result.failed:
        result.notes += _other_spec(metadata, spec, spec_path)
        if precision != "int8":  # quantized weights never equal a fresh export's float ones: nothing to name
            result.notes += differing_weights(proto, precision, model, input_size)
    explain_targets(result, targets, model, batches=batches, seed=seed, tolerances=tolerances, held_out=held_out,
                    spec=spec, always=explain)
    return result


def _other_spec(metadata: dict[str, str], spec: Spec, spec_path: str | Path) -> list[str]:
    """Says so first when the file's own metadata names another spec than the one it is checked against."""
    name, digest = metadata.get(META_SPEC_NAME), metadata.get(META_SPEC_HASH)
    expected = spec_hash(spec)
    if digest is None or digest == expected:
        return []
    return [f"this file was exported from spec {name!r} (spec hash {digest[:12]}...), not from {spec_path} "
            f"({spec.name!r}, spec hash {expected[:12]}...): check it against its own spec"]


def differing_weights(proto: onnx.ModelProto, precision: Precision, model: XceptionNet,
                      input_size: Sequence[int], limit: int = 5) -> list[str]:
    """Where an ONNX departs from the model: initializers that differ from a fresh export of it.

    Our export is deterministic and keeps parameter names, so a re-export is the exact expected
    file; comparing initializers by name points at the tensor that was changed.
    """
    from onnx import numpy_helper

    fresh = export_onnx(model, input_size, profile=BatchProfile(1, 2, 2))
    if precision == "fp16":
        fresh = to_fp16(fresh)
    expected = {t.name: numpy_helper.to_array(t) for t in fresh.graph.initializer}
    found = []
    for tensor in proto.graph.initializer:
        if tensor.name in expected:
            have, want = numpy_helper.to_array(tensor), expected[tensor.name]
            if have.shape != want.shape:
                found.append((float("inf"), f"{tensor.name}: shape {have.shape}, expected {want.shape}"))
            elif not np.array_equal(have, want):
                delta = float(np.abs(have.astype(np.float64) - want.astype(np.float64)).max())
                count = int((have != want).sum())
                found.append((delta, f"{tensor.name}: {count} value(s) differ, max |diff| {delta:.3g}"))
    if not any(t.name in expected for t in proto.graph.initializer):
        return ["cannot locate the difference: the file's weight names do not match an xbuild export"]
    found.sort(key=lambda item: -item[0])
    lines = [f"weight differs from the spec+weights export: {text}" for _, text in found[:limit]]
    if len(found) > limit:
        lines.append(f"... and {len(found) - limit} more weights differ")
    return lines
