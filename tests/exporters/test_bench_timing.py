"""How ``xbuild bench`` takes a figure (exporters.bench_timing): percentiles, the timing loop, settings."""

from __future__ import annotations

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
