"""How ``xbuild bench`` takes a figure (exporters.bench.timing, .peaks): the timing loops, settings, peaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporters.bench.peaks import cpu_peak_from, read_proc_fields
from exporters.bench.timing import (
    BenchSettings,
    Timing,
    describe_environment,
    environment,
    measure,
    measure_interleaved,
    percentile,
)
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


def test_measure_interleaved_takes_turns() -> None:
    events: list[str] = []
    timings = measure_interleaved({"a": lambda: events.append("a"), "b": lambda: events.append("b")},
                                  lambda: None, warmup=1, reps=3)
    assert events == ["a", "b"] + ["a", "b"] * 3  # warm-up each, then round-robin
    assert {name: len(t.samples) for name, t in timings.items()} == {"a": 3, "b": 3}


def test_settings_are_validated() -> None:
    with pytest.raises(UserError, match="choose from pytorch-cpu, pytorch-cuda"):
        BenchSettings(backends=("pytorch-cpu", "tvm"))  # type: ignore[arg-type]
    assert BenchSettings(device="cpu").backends == ("pytorch-cpu", "pytorch-compile-cpu", "onnxruntime-cpu",
                                                    "openvino-cpu")
    with pytest.raises(UserError, match="positive"):
        BenchSettings(batches=(0,))


def _cpuinfo(flags: str, mhz: tuple[str, ...] = ("1000.000", "3000.000")) -> dict[str, list[str]]:
    return {"model name": ["Fake CPU 9000"] * len(mhz), "flags": [flags] * len(mhz), "cpu MHz": list(mhz)}


def test_proc_files_parse_into_fields(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Fake CPU 9000\ncpu MHz\t\t: 1000.000\n\n"
                    "processor\t: 1\nmodel name\t: Fake CPU 9000\ncpu MHz\t\t: 3000.000\n")
    fields = read_proc_fields(str(fake))
    assert fields["cpu MHz"] == ["1000.000", "3000.000"] and fields["model name"][0] == "Fake CPU 9000"
    assert read_proc_fields(str(tmp_path / "missing")) == {}


def test_cpu_peak_comes_from_the_vector_units_the_cpu_lists() -> None:
    peak = cpu_peak_from(_cpuinfo("fpu sse2 avx2 fma"), threads=2)
    assert peak.flops["fp32"] == pytest.approx(2 * 3.0e9 * 32)  # fastest clock, AVX2+FMA
    assert "3.00 GHz" in peak.source and "AVX2+FMA" in peak.source
    avx512 = cpu_peak_from(_cpuinfo("avx2 fma avx512f avx512_bf16 avx512_vnni"), threads=1)
    assert avx512.flops == pytest.approx({"fp32": 3e9 * 64, "bf16": 3e9 * 128, "int8": 3e9 * 256})
    assert avx512.emulated == ()


def test_a_precision_without_instructions_is_emulated_not_given_a_peak() -> None:
    """No avx512_bf16, no AMX: bf16 runs through fp32 arithmetic (measured 2.2x slower than fp32).
    int8 without VNNI still has AVX2's VPMADDUBSW (4/3 the fp32 rate); without AVX2 it is emulated."""
    peak = cpu_peak_from(_cpuinfo("avx2 fma avx512f"), threads=2)
    assert "bf16" not in peak.flops and peak.emulated == ("bf16",) and "emulated" in peak.source
    assert peak.flops_for("bf16") == peak.flops["fp32"]
    assert peak.flops["int8"] == pytest.approx(2 * 3e9 * 32 * 4 / 3) and "VPMADDUBSW" in peak.source  # AVX2 width
    old = cpu_peak_from(_cpuinfo("sse2"), threads=1)
    assert old.emulated == ("bf16", "int8") and old.flops_for("int8") == old.flops["fp32"]


def test_environment_names_the_cpu() -> None:
    import torch

    env = environment(torch.device("cpu"), "test")
    assert env["device_name"] and env["threads"] == torch.get_num_threads()
    assert str(env["device_name"]) in describe_environment(env)
