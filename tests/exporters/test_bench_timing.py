"""How ``xbuild bench`` takes a figure (exporters.bench_timing): percentiles, the timing loop, settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporters.bench_timing import BenchSettings, Timing, measure, percentile
from xception_build.errors import UserError


@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [5.0, 1.0, 3.0, 2.0, 8.0, 13.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_measure_warms_up_syncs_every_call_and_keeps_min_reps() -> None:
    events: list[str] = []
    timing = measure(lambda: events.append("call"), lambda: events.append("sync"), warmup=2, min_reps=4,
                     max_reps=100, budget_s=0.0)
    assert len(timing.samples) == 4
    assert events == ["call", "call", "sync"] + ["call", "sync"] * 4  # warm-up, one sync, then timed


def test_measure_repeats_until_the_budget_is_spent_but_stops_at_max_reps() -> None:
    assert len(measure(lambda: None, lambda: None, warmup=0, min_reps=1, max_reps=7, budget_s=60).samples) == 7
    timing = measure(lambda: None, lambda: None, warmup=0, min_reps=3, max_reps=10**6, budget_s=0.05)
    assert len(timing.samples) > 3 and sum(timing.samples) <= 0.05 + 0.05


def test_timing_percentiles() -> None:
    t = Timing((0.1, 0.2, 0.3, 0.4, 1.0))
    assert t.p50 == pytest.approx(0.3) and t.p90 == pytest.approx(0.76)


def test_settings_are_validated() -> None:
    with pytest.raises(UserError, match="choose from torch, compile, onnxruntime, tensorrt"):
        BenchSettings(backends=("torch", "tvm"))
    with pytest.raises(UserError, match="positive"):
        BenchSettings(batches=(0,))


FAKE_CPUINFO = """processor\t: 0
model name\t: Fake CPU 9000
flags\t\t: fpu sse2 avx2 fma
cpu MHz\t\t: 1000.000

processor\t: 1
model name\t: Fake CPU 9000
flags\t\t: fpu sse2 avx2 fma
cpu MHz\t\t: 3000.000
"""


def test_cpuinfo_is_read_by_one_function_for_peak_environment_and_benchmark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """xception_build.analysis parses /proc files once for all: cpu_peak, bench's environment and
    benchmarks/onnx_export_speed.py all see the same (here faked) /proc/cpuinfo."""
    import importlib.util

    import torch

    from exporters.bench_timing import environment
    from xception_build import analysis

    fake = tmp_path / "cpuinfo"
    fake.write_text(FAKE_CPUINFO)
    fields = analysis.read_proc_fields(str(fake))
    assert fields["cpu MHz"] == ["1000.000", "3000.000"] and fields["model name"][0] == "Fake CPU 9000"
    assert analysis.read_proc_fields(str(tmp_path / "missing")) == {}
    monkeypatch.setattr(analysis, "CPUINFO", str(fake))

    peak = analysis.cpu_peak()
    threads = torch.get_num_threads()
    assert peak.flops["fp32"] == pytest.approx(threads * 3.0e9 * 32)  # fastest clock, AVX2+FMA
    assert "3.00 GHz" in peak.source and "AVX2+FMA" in peak.source
    assert environment(torch.device("cpu"), "test")["device_name"] == "Fake CPU 9000"

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "onnx_export_speed.py"
    spec = importlib.util.spec_from_file_location("onnx_export_speed", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if Path("/proc/loadavg").exists() and importlib.util.find_spec("onnxruntime"):
        assert "Fake CPU 9000" in module.machine()


def test_peak_memory_reads_vm_hwm_through_the_same_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exporters import bench_train

    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t  1000 kB\n")
    real = bench_train.read_proc_fields
    monkeypatch.setattr(bench_train, "read_proc_fields",
                        lambda path: real(str(status) if path == "/proc/self/status" else path))
    assert bench_train._rss_peak() == 123456 * 1024
