"""Analytic figures (exporters.bench.analysis): counts checked by hand and against the plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from exporters.bench.analysis import AnalyticFigures, analyse, fraction_of_peak
from exporters.bench.peaks import DevicePeak, cpu_peak, gpu_peak, peak_precision
from xception_build import build_model

# Not from conftest: tests/exporters/ has its own conftest module of the same name.
SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_hand_counted_macs_and_activations() -> None:
    # conv 3->4 (k3, pad 1) on 5x5: 4*5*5 outputs x 3*3*3 MACs; ReLU: 100 elements; linear 4->2 after pooling.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    figures = analyse(model, (3, 5, 5))
    assert figures.macs == 100 * 27 + 2 * 4
    assert figures.activation_elements == 100 + 100 + 4 + 4 + 2
    assert figures.params == 4 * 27 + 4 * 2 + 2
    assert figures.param_bytes == 4 * figures.params and figures.flops == 2 * figures.macs


def test_depthwise_convolutions_count_one_input_channel_per_output() -> None:
    figures = analyse(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), (8, 4, 4))
    assert figures.macs == 8 * 16 * 9


@pytest.mark.parametrize("spec", ["xception_cifar.yaml", "xception.yaml"])
def test_counts_agree_with_the_plan(spec: str) -> None:
    model = build_model(SPECS / spec)
    figures = analyse(model)
    assert figures.macs == model.plan.total_macs
    assert figures.params == model.plan.total_params
    assert figures.input_size == model.plan.input_shape.as_tuple()


def test_paper_xception_matches_the_reference_figures() -> None:
    figures = analyse(build_model(SPECS / "xception.yaml"))
    assert figures.params == 22_855_952
    assert 8.3e9 < figures.macs < 8.45e9  # "8.4 GMACs at 299x299" (REFERENCE.md, timm)
    assert 10 < figures.arithmetic_intensity < 100  # low: depthwise convs are memory-bound


def test_the_meta_pass_leaves_the_model_untouched() -> None:
    model = build_model(SPECS / "xception_cifar.yaml").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyse(model)
    assert model.training and all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _DataDependent(nn.Module):
    """Branches on a value: impossible on the meta device, so analyse() must fall back to CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * 2 if float(y.sum()) > 0 else y


def test_falls_back_to_a_cpu_pass_when_meta_cannot_run() -> None:
    model = _DataDependent().train()
    figures = analyse(model, (1, 3, 3))
    assert figures.macs == 2 * 9 and figures.activation_elements == 18
    assert model.training


def test_bf16_halves_the_bytes_and_doubles_the_intensity() -> None:
    fp32 = AnalyticFigures((3, 8, 8), params=100, macs=10_000, activation_elements=400)
    bf16 = fp32.at(2)
    assert bf16.param_bytes * 2 == fp32.param_bytes and bf16.activation_bytes * 2 == fp32.activation_bytes
    assert bf16.arithmetic_intensity == pytest.approx(2 * fp32.arithmetic_intensity)
    assert fp32.arithmetic_intensity == pytest.approx(20_000 / (400 + 1600))


@pytest.mark.parametrize(("name", "expected"), [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL"),
    ("NVIDIA H200", "NVIDIA H200 SXM"),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB"),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 40GB"),
    ("Tesla T4", None),
])
def test_gpu_names_map_to_datasheet_peaks(name: str, expected: str | None) -> None:
    peak = gpu_peak(name)
    assert (peak.name if peak else None) == expected
    if peak:
        assert peak.flops["bf16"] > peak.flops["tf32"] > peak.flops["fp32"] > 0 and peak.bandwidth


def test_cpu_peak_is_a_labelled_estimate() -> None:
    peak = cpu_peak()
    assert peak.flops["fp32"] > 0 and peak.bandwidth is None and peak.source.startswith("estimate")


def test_fraction_of_peak() -> None:
    figures = AnalyticFigures((3, 8, 8), params=0, macs=1_000_000_000, activation_elements=1_000_000)
    peak = DevicePeak("test", {"fp32": 1e12, "bf16": 4e12}, bandwidth=1e9)
    inference = fraction_of_peak(figures, 100.0, peak, "fp32")
    assert inference["fraction_flops"] == pytest.approx(0.2)  # 2 GFLOP x 100 / 1 TFLOP/s
    assert inference["fraction_bandwidth"] == pytest.approx(0.4)  # 4 MB x 100 / 1 GB/s
    training = fraction_of_peak(figures, 100.0, peak, "bf16", training=True)
    assert training["fraction_flops"] == pytest.approx(3 * 2e11 / 4e12)
    assert training["achieved_bytes_per_s"] == pytest.approx(3 * 2e6 * 100)  # bf16: 2 bytes per element
    unknown = fraction_of_peak(figures, 100.0, None)
    assert unknown["fraction_flops"] is None and unknown["fraction_bandwidth"] is None


def test_precision_compared_against() -> None:
    assert peak_precision("cpu") == "fp32" and peak_precision("cpu", "bf16") == "bf16"
    saved = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert peak_precision(torch.device("cuda")) == "tf32"  # cuDNN's default for fp32 convs
        torch.backends.cudnn.allow_tf32 = False
        assert peak_precision(torch.device("cuda")) == "fp32"
    finally:
        torch.backends.cudnn.allow_tf32 = saved
