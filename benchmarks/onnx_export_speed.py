"""How long ``xbuild export`` takes for Xception, and how fast the result runs in ONNX Runtime on CPU.

One run prints, side by side:

* export time of specs/xception.yaml (our export: dynamo, BN folded, checked, deterministic), and
  of the whole ``xbuild export`` (export + weights + verification at the profile's min/opt/max);
* ORT CPU latency at batch 1 and 8 of (a) our export with our session options, (b) a plain
  ``torch.onnx.export(model, x, path)`` with every default (static batch, so one file per batch
  size), run with ORT's default session options and with ours, and (c) PyTorch eager.

Usage: python benchmarks/onnx_export_speed.py [--spec specs/xception.yaml] [--repeats 10]
Figures are medians; the machine (nproc, CPU model, load average) is printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from exporters.bench.timing import describe_environment, environment, measure_interleaved
from exporters.contract import BatchProfile
from exporters.onnx.export import export_onnx, serialize
from exporters.onnx.runtime import session_options
from exporters.pipeline import ExportRequest, run_export
from xception_build import build_model


def machine() -> str:
    return describe_environment(environment(torch.device("cpu"), "onnx_export_speed"))


def ort_run(path: Path, tuned: bool, x: np.ndarray) -> Callable[[], object]:
    import onnxruntime as ort

    options = session_options() if tuned else ort.SessionOptions()
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the plain exporter prints its progress
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/xception.yaml")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    model = build_model(args.spec).eval()
    size = model.plan.input_shape.as_tuple()
    work = Path(tempfile.mkdtemp(prefix="xbuild-bench-"))
    ours = work / "ours.onnx"

    def export_ours() -> None:
        ours.write_bytes(serialize(export_onnx(model, size, profile=BatchProfile(1, 8, 16))))

    cold, warm = timed(export_ours), timed(export_ours)
    plain = {batch: timed(lambda b=batch: torch.onnx.export(model, (torch.randn(b, *size),),
                                                            str(work / f"plain{b}.onnx")))
             for batch in (1, 8)}
    pipeline = timed(lambda: run_export(ExportRequest(spec=Path(args.spec), out=work / "xbuild")))
    print(f"\nexport time, {args.spec}: ours {cold:.1f} s cold (first export in the process), "
          f"{warm:.1f} s warm; plain torch.onnx.export {plain[1]:.1f} s (batch 1), {plain[8]:.1f} s "
          f"(batch 8); whole `xbuild export` (ONNX + weights + verification at 1, 8, 16) {pipeline:.1f} s")

    print("\n| batch | ours, tuned ORT | plain export, default ORT | plain, tuned ORT | PyTorch eager |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for batch in (1, 8):
        x = np.random.default_rng(0).standard_normal((batch, *size), dtype=np.float32)
        tensor = torch.from_numpy(x)

        def eager(t: torch.Tensor = tensor) -> object:
            with torch.inference_mode():
                return model(t)

        plain_path = work / f"plain{batch}.onnx"
        runs = {"ours": ort_run(ours, True, x), "plain": ort_run(plain_path, False, x),
                "plain tuned": ort_run(plain_path, True, x), "eager": eager}
        timings = measure_interleaved(runs, lambda: None, warmup=2,
                                      reps=args.repeats if batch == 1 else max(3, args.repeats // 2))
        print(f"| {batch} | " + " | ".join(f"{1e3 * timings[name].p50:.0f} ms" for name in runs) + " |")
    print(f"\nmachine after: {machine()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
