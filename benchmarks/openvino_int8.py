"""Which int8 IR should ``xbuild export --openvino`` write: OpenVINO's reading of our own QDQ file, or
NNCF's post-training quantization of the fp32 IR?  Both on speed and on agreement/accuracy.

    .venv/bin/pip install nncf        # only for this comparison; not a dependency of xception-build
    .venv/bin/python benchmarks/openvino_int8.py --accuracy-spec specs/xception_cifar.yaml \\
        --weights digits.safetensors --data DIGITS --speed-spec specs/xception.yaml --batch 8

Accuracy: the small spec trained on a real image folder (examples/train.py), both int8 IRs
calibrated on the same training images and judged on the same held-out images against the fp32
PyTorch model. Speed: the paper's network at 299x299 (seeded weights: the ranges change no kernel),
every IR and ONNX Runtime's fp32 file timed round-robin in one run. The CPU's instruction sets are
printed with the figures.

NNCF reports usage through openvino-telemetry unless it runs in CI; this script sets CI=true before
importing it, so nothing is sent.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from exporters.calibration import HeldOut
from xception_build.model import XceptionNet

os.environ["CI"] = "true"  # nncf and openvino-telemetry send nothing in CI (see the docstring)


def _nncf_ir(fp32_xml: Path, calibration: np.ndarray, out: Path) -> Path:
    import nncf

    from exporters.openvino.ir import load_openvino

    ov = load_openvino()

    model = ov.Core().read_model(str(fp32_xml))
    batches = [calibration[i:i + 8] for i in range(0, len(calibration), 8)]
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(calibration))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def _irs(spec_path: str, weights: str | None, calibration_source: str, folder: Path, *, calib_size: int = 256,
         eval_size: int = 500) -> tuple[XceptionNet, dict[str, Path], HeldOut, Path]:
    """(reference model, {name: IR path}, held-out images, ONNX Runtime fp32 file) for one spec."""
    from exporters.calibration import DataSource, load_images
    from exporters.contract import BatchProfile
    from exporters.onnx.export import export_onnx, serialize
    from exporters.onnx.quantize import quantize_int8
    from exporters.openvino.ir import write_ir
    from exporters.verify.reference import reference_model
    from xception_build.spec import load_spec

    spec = load_spec(spec_path)
    model = reference_model(spec, Path(weights) if weights else None, 0)
    input_size = model.plan.input_shape.as_tuple()
    calibration, held_out = load_images(DataSource(calibration_source, calib_size, eval_size), spec)
    proto = export_onnx(model, input_size, profile=BatchProfile(1, 8, 32))
    onnx_fp32 = folder / "model.onnx"
    onnx_fp32.write_bytes(serialize(proto))
    qdq = folder / "model.int8.onnx"
    qdq.write_bytes(serialize(quantize_int8(proto, calibration, activations="symmetric")))
    irs = {"fp32 IR": folder / "model.xml", "int8 IR from our QDQ": folder / "model.int8.xml"}
    write_ir(onnx_fp32, irs["fp32 IR"])
    write_ir(qdq, irs["int8 IR from our QDQ"])
    irs["int8 IR by NNCF"] = _nncf_ir(irs["fp32 IR"], calibration, folder / "model.nncf.xml")
    return model, irs, held_out, onnx_fp32


def accuracy(args: argparse.Namespace) -> None:
    import torch

    from exporters.openvino.runtime import OpenVINORunner

    with tempfile.TemporaryDirectory() as tmp:
        model, irs, held_out, _ = _irs(args.accuracy_spec, args.weights, args.data, Path(tmp))
        with torch.inference_mode():
            reference = torch.cat([model(torch.from_numpy(b)) for b in held_out.batches(32)]).numpy()
        labels = held_out.labels
        print(f"\naccuracy: {args.accuracy_spec} on {held_out.description}")
        print(f"  fp32 PyTorch                  accuracy {np.mean(reference.argmax(1) == labels):.2%}")
        for name, xml in irs.items():
            with OpenVINORunner(xml, precision="f32") as runner:
                got = np.concatenate([runner.infer({"input": b})["logits"] for b in held_out.batches(32)])
            agree = np.mean(got.argmax(1) == reference.argmax(1))
            norms = np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
            cos = np.mean(np.sum(got * reference, 1) / norms)
            print(f"  {name:28s}  accuracy {np.mean(got.argmax(1) == labels):.2%}  top-1 agreement {agree:.2%}  "
                  f"cosine {cos:.5f}")


def speed(args: argparse.Namespace) -> None:
    from exporters.bench.peaks import cpu_isa_flags, cpu_name
    from exporters.bench.timing import measure_interleaved
    from exporters.onnx.runtime import OnnxRuntimeRunner
    from exporters.openvino.runtime import OpenVINORunner
    from exporters.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        model, irs, _, onnx_fp32 = _irs(args.speed_spec, None, "synthetic", Path(tmp), calib_size=32, eval_size=8)
        size = model.plan.input_shape.as_tuple()
        x = np.random.default_rng(0).standard_normal((args.batch, *size), dtype=np.float32)
        runners: dict[str, Runner] = {"onnxruntime-cpu fp32 ONNX": OnnxRuntimeRunner(onnx_fp32)}
        runners |= {f"openvino-cpu {name}": OpenVINORunner(xml, precision="f32") for name, xml in irs.items()}
        for runner in runners.values():
            runner.load()
        calls = {name: runner.timed_call({"input": x}) for name, runner in runners.items()}
        timings = measure_interleaved(calls, lambda: None, warmup=2, reps=args.reps)
        base = timings["onnxruntime-cpu fp32 ONNX"].p50
        print(f"\nspeed: {args.speed_spec}, batch {args.batch}, {cpu_name()} [{' '.join(cpu_isa_flags())}], "
              f"{os.cpu_count()} cores, round-robin x {args.reps}")
        for name, timing in timings.items():
            print(f"  {name:40s} p50 {1e3 * timing.p50:8.1f} ms  {base / timing.p50:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy-spec", default="specs/xception_cifar.yaml")
    parser.add_argument("--weights", help="trained weights of --accuracy-spec (examples/train.py)")
    parser.add_argument("--data", help="the image folder --weights was trained on (train/ and val/)")
    parser.add_argument("--speed-spec", default="specs/xception.yaml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    if args.weights and args.data:
        accuracy(args)
    speed(args)


if __name__ == "__main__":
    main()
