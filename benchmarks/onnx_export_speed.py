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
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from exporters.onnx_export import export_onnx, serialize
from exporters.pipeline import ExportRequest, run_export
from exporters.runners import BatchProfile, session_options
from xception_build import build_model
from xception_build.analysis import cpu_name


def machine() -> str:
    model = cpu_name() or platform.processor()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (f"nproc {os.cpu_count()}, {model}, load average {load}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), onnxruntime {__import__('onnxruntime').__version__}")


def interleaved_ms(runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median latency of each callable, measured round-robin so that load from other processes
    on a shared machine falls on every contender alike."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


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
    size = tuple(model.pretrained_cfg["input_size"])
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
        medians = interleaved_ms(runs, args.repeats if batch == 1 else max(3, args.repeats // 2))
        print(f"| {batch} | " + " | ".join(f"{medians[name]:.0f} ms" for name in runs) + " |")
    print(f"\nmachine after: {machine()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
