"""The builder and the Python API: what a user of ``build_model`` relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from spec_files import SPECS, shipped_specs
from torch import nn

from xception_build import build_model, load_spec, plan_spec
from xception_build.spec import dump_resolved_yaml, spec_hash


@pytest.mark.parametrize("spec_file", shipped_specs(), ids=lambda p: p.stem)
def test_every_shipped_spec_compiles_and_runs(spec_file: Path) -> None:
    # A 71-pixel input keeps the big networks cheap; every spec is fully convolutional.
    overrides = [] if spec_file.stem == "xception_cifar" else ["input.size=71"]
    model = build_model(spec_file, overrides=overrides).eval()
    assert sum(p.numel() for p in model.parameters()) == model.plan.total_params
    size = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, *size))
        logits = model.forward_head(features)
    assert tuple(features.shape[1:]) == model.plan.feature_shape.as_tuple()
    assert logits.shape == (2, model.num_classes)


@pytest.mark.parametrize("spec_file", shipped_specs(), ids=lambda p: p.stem)
def test_every_shipped_spec_is_commented_by_flow(spec_file: Path) -> None:
    lines = spec_file.read_text().splitlines()
    assert lines[0].startswith("#"), "a spec opens with a comment saying what network it is"
    for flow in ("entry:", "middle:", "exit:"):
        if flow in lines:
            index = lines.index(flow)
            assert lines[index - 1].startswith("#"), f"{spec_file.name}: no comment above {flow}"


def test_xception_summary_figures() -> None:
    plan = plan_spec(load_spec(SPECS / "xception.yaml"))
    assert plan.feature_shape.as_tuple() == (2048, 10, 10)
    assert 8.3e9 < plan.total_macs < 8.45e9  # timm reports 8.4 GMACs
    spatial = [b.out_shape.height for b in plan.blocks]
    assert spatial[:5] == [149, 147, 74, 37, 19]


def test_timm_style_interface(cifar_spec: Path) -> None:
    model = build_model(cifar_spec).eval()
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["interpolation"] == "bilinear"
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features, 4, 4)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        assert torch.equal(model.forward_head(features), model(x))
    model.reset_classifier(5)
    assert model.num_classes == 5 and model(x).shape == (2, 5)
    assert model.plan.head.num_classes == 5 and model.plan.total_params == sum(p.numel() for p in model.parameters())
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_reset_classifier_keeps_the_models_dtype(cifar_spec: Path) -> None:
    model = build_model(cifar_spec).to(torch.bfloat16).eval()
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_module_names_map_to_spec_entries_and_back() -> None:
    model = build_model(SPECS / "xception.yaml")
    names = dict(model.named_modules())
    assert "middle.blocks.7.main.sep3.dw" in names
    assert model.spec_path_of("middle.blocks.7.main.sep3.dw") == "middle.blocks[0]"
    assert model.spec_path_of("entry.blocks.2.shortcut.conv") == "entry.blocks[2]"
    assert model.modules_of("middle.blocks[0]") == [f"middle.blocks.{i}" for i in range(8)]
    block = next(b for b in model.plan.blocks if b.module_name == "entry.blocks.2")
    spec_line = (SPECS / "xception.yaml").read_text().splitlines()[block.line - 1]
    assert "728" in spec_line  # the recorded line is the entry that declares the block


def test_initialisation_is_seeded_and_independent_of_global_rng(cifar_spec: Path) -> None:
    torch.manual_seed(1)
    a = build_model(cifar_spec, seed=3).state_dict()
    torch.manual_seed(2)
    torch.rand(100)
    b = build_model(cifar_spec, seed=3).state_dict()
    c = build_model(cifar_spec, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_resolved_spec_recompiles_to_the_same_network(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "xception71.yaml", overrides=["head.num_classes=10", "middle.repeat=2"])
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(dump_resolved_yaml(spec))
    again = load_spec(resolved)
    assert spec_hash(again) == spec_hash(spec)
    first, second = build_model(spec), build_model(again)
    assert [(k, v.shape) for k, v in first.state_dict().items()] == \
        [(k, v.shape) for k, v in second.state_dict().items()]
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())


def test_extends_and_set_overrides() -> None:
    spec = load_spec(SPECS / "xception65p.yaml", overrides=["middle.repeat=4", "head.num_classes=10",
                                                            "entry.blocks[0].stride=1"])
    plan = plan_spec(spec)
    assert spec.defaults.norm.eps == 1e-3 and spec.defaults.preact  # from 65p and from 41p
    assert len([b for b in plan.blocks if b.flow == "middle"]) == 4
    assert plan.head.num_classes == 10
    assert plan.blocks[2].out_shape.height == plan.blocks[1].out_shape.height  # stride 1 now


def test_width_and_depth_multipliers() -> None:
    plan = plan_spec(load_spec(SPECS / "xception.yaml", overrides=["scaling.width=0.5", "scaling.depth=0.5"]))
    channels = [b.out_shape.channels for b in plan.blocks]
    assert all(c % 8 == 0 for c in channels)
    assert channels[:3] == [16, 32, 64] and 360 <= channels[5] <= 368  # 728 * 0.5 rounded to 8
    assert len([b for b in plan.blocks if b.flow == "middle"]) == 4
    model = build_model(load_spec(SPECS / "xception.yaml", overrides=["scaling.width=0.5", "input.size=71"]))
    assert sum(p.numel() for p in model.parameters()) == model.plan.total_params


@pytest.mark.parametrize("activation", ["relu", "relu6", "elu", "gelu", "silu", "none"])
def test_activation_kinds(cifar_spec: Path, activation: str) -> None:
    model = build_model(cifar_spec, overrides=[f"defaults.activation={activation}"])
    kinds = {type(m) for m in model.modules()}
    expected = {"relu": nn.ReLU, "relu6": nn.ReLU6, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}
    if activation == "none":
        # the stem and the exit tail's named activations still follow the flow's activation
        assert not kinds & set(expected.values())
    else:
        assert expected[activation] in kinds
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("shortcut,modules", [("conv_norm", 2), ("conv", 1), ("none", 0)])
def test_shortcut_kinds(cifar_spec: Path, shortcut: str, modules: int) -> None:
    model = build_model(cifar_spec, overrides=[f"entry.blocks[1].shortcut={shortcut}"])
    block = model.entry.blocks[1]
    found = [m for m in block.modules() if block.has_shortcut and m in list(block.shortcut.modules())
             and isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert len(found) == modules


def test_downsample_by_depthwise_stride_has_no_pool(cifar_spec: Path) -> None:
    model = build_model(cifar_spec, overrides=["defaults.downsample=depthwise"])
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    strided = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.stride == (2, 2)]
    assert len(strided) == 3  # two entry blocks and the exit block


@pytest.mark.parametrize("overrides,message", [
    (["exit.blocks[0].out=" + str([64] * 1001)], "separable convs listed in out: 1,001 is out of range: at most 1,000"),
    (["entry.stem[0].repeat=600", "entry.stem[1].repeat=600"], "1,200 stem layers would make more than 1,000"),
])
def test_documented_limits_hold(cifar_spec: Path, overrides: list[str], message: str) -> None:
    from xception_build.errors import SpecError

    with pytest.raises(SpecError, match=message):
        plan_spec(load_spec(cifar_spec, overrides=overrides))


def test_a_stem_entry_may_be_of_any_block_kind(tmp_path: Path) -> None:
    """Block kinds are not tied to a place: a residual xception block can open the entry flow."""
    spec = tmp_path / "xception_stem.yaml"
    spec.write_text("name: xstem\ninput: {size: 32}\nentry:\n  stem:\n"
                    "    - {out: 16, stride: 2}\n    - {kind: xception, out: 32, reps: 2, stride: 2}\n"
                    "  blocks: [{kind: conv, out: 48}]\nexit: {blocks: [{out: 64, reps: 1}]}\n"
                    "head: {num_classes: 3}\n")
    model = build_model(spec).eval()
    kinds = [(b.module_name, b.kind) for b in model.plan.blocks]
    assert kinds == [("entry.stem.0", "conv"), ("entry.stem.1", "xception"), ("entry.blocks.0", "conv"),
                     ("exit.blocks.0", "xception")]
    assert model.plan.blocks[1].out_shape.as_tuple() == (32, 8, 8)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
