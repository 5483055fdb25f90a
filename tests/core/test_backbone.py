"""The network as a backbone, against timm's own numbers: taps (feature_info and values) of the six
reference specs, and output-stride 16/8 logits of the aligned variants.

The fixtures (``fixtures/reference/backbone``) hold timm 1.0.31's ``features_only=True`` maps of
the formula weights at 224x224 and its ``create_model(name, output_stride=N)`` logits. A tap one
module early or late, or a dilation in the wrong block, is off by far more than the 1e-4 bound."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest
import torch
from reference import FIXTURES, REFERENCE_SPECS, formula, formula_input, reference, reference_state_dict, relative_error
from spec_files import SPECS

from xception_build import build_model
from xception_build.errors import UserError
from xception_build.weights import load_state

SIZE = 224  # the backbone fixtures' input size


@cache
def backbone(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "backbone" / f"{name}.json").read_text())


def _check_taps(maps: list[torch.Tensor], ref: dict[str, Any]) -> None:
    assert len(maps) == len(ref["taps"])
    for index, (actual, tap) in enumerate(zip(maps, ref["taps"], strict=True)):
        assert list(actual.shape) == tap["shape"], index
        means = actual.double().mean(dim=(2, 3))
        sample = actual.reshape(-1)[torch.tensor(tap["sample_index"])]
        assert relative_error(means, torch.tensor(tap["channel_means"])) < 1e-4, index
        assert relative_error(sample, torch.tensor(tap["sample"])) < 1e-4, index


@pytest.mark.parametrize("ref_name", sorted(REFERENCE_SPECS))
def test_feature_info_matches_timm(ref_name: str) -> None:
    model = build_model(SPECS / f"{REFERENCE_SPECS[ref_name]}.yaml", overrides=[f"input.size={SIZE}"])
    expected = backbone(ref_name)["feature_info"]
    assert [(i["num_chs"], i["reduction"]) for i in model.feature_info] == [
        (i["num_chs"], i["reduction"]) for i in expected]
    features = build_model(SPECS / f"{REFERENCE_SPECS[ref_name]}.yaml", features_only=True)
    assert features.feature_info.channels() == [i["num_chs"] for i in expected]
    assert features.feature_info.reduction() == [i["reduction"] for i in expected]
    names = dict(model.named_modules())
    assert all(info["module"] in names for info in model.feature_info)


@pytest.mark.slow
@pytest.mark.parametrize("ref_name", sorted(REFERENCE_SPECS))
def test_taps_match_timm_features_only(ref_name: str) -> None:
    """forward_intermediates of the network and the forward of a features-only model both give
    timm's maps; the features-only model takes the whole network's (timm-layout) checkpoint."""
    spec = SPECS / f"{REFERENCE_SPECS[ref_name]}.yaml"
    ref = backbone(ref_name)
    x = formula_input(batch=2, size=SIZE).float()
    model = build_model(spec, overrides=[f"input.size={SIZE}"]).eval()
    load_state(model, reference_state_dict(ref_name))
    features = build_model(spec, features_only=True).eval()
    load_state(features, reference_state_dict(ref_name))
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        _check_taps(maps, ref)
        _check_taps(features(x), ref)


@pytest.mark.parametrize("ref_name", ["legacy_xception", "xception41", "xception41p"])
def test_a_tap_one_module_early_is_detected(ref_name: str) -> None:
    """The comparison can fail: the first map read at the layer just before timm's tap (a norm
    instead of the ReLU after it, a depthwise conv instead of the pointwise after it) is refused."""
    model = build_model(SPECS / f"{REFERENCE_SPECS[ref_name]}.yaml", overrides=[f"input.size={SIZE}"]).eval()
    load_state(model, reference_state_dict(ref_name))
    leaves = [name for name, m in model.named_modules() if not list(m.children())]
    tap_module = model.feature_info[0]["module"]
    last_leaf = max(i for i, name in enumerate(leaves) if name == tap_module or name.startswith(tap_module + "."))
    seen: list[torch.Tensor] = []
    hook = dict(model.named_modules())[leaves[last_leaf - 1]].register_forward_hook(
        lambda module, args, out: seen.append(out.clone()))
    with torch.no_grad():
        _, maps = model.forward_intermediates(formula_input(batch=2, size=SIZE).float(), indices=[0], stop_early=True)
    hook.remove()
    tap = backbone(ref_name)["taps"][0]
    assert relative_error(maps[0].double().mean(dim=(2, 3)), torch.tensor(tap["channel_means"])) < 1e-4
    early = seen[0]
    assert early.shape != maps[0].shape or relative_error(
        early.double().mean(dim=(2, 3)), torch.tensor(tap["channel_means"])) > 1e-2


def _output_stride_state(ref_name: str, model: Any) -> dict[str, torch.Tensor]:
    """timm's OS model keys: the reference keys, less the shortcuts that turned into identities
    (checked against timm's own parameter count by the caller)."""
    blocks = [b.module_name for b in model.plan.blocks if ".blocks." in b.module_name]
    keys = set(model.state_dict())
    without = {i for i, name in enumerate(blocks) if not any(k.startswith(f"{name}.shortcut.") for k in keys)}
    return {k: formula(k, shape) for k, shape in reference(ref_name)["state_dict"].items()
            if not ((m := re.match(r"blocks\.(\d+)\.shortcut\.", k)) and int(m.group(1)) in without)}


ALIGNED = sorted(name for name in REFERENCE_SPECS if "output_stride" in backbone(name))


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("ref_name", ALIGNED)
def test_output_stride_matches_timm(ref_name: str, output_stride: int) -> None:
    expected = backbone(ref_name)["output_stride"][str(output_stride)]
    model = build_model(SPECS / f"{REFERENCE_SPECS[ref_name]}.yaml", overrides=[f"input.size={SIZE}"],
                        output_stride=output_stride).eval()
    state = _output_stride_state(ref_name, model)
    params = sum(t.numel() for k, t in state.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert params == expected["params"] == model.plan.total_params
    load_state(model, state)
    with torch.no_grad():
        logits = model(formula_input(batch=2, size=SIZE).float())
    assert relative_error(logits, torch.tensor(expected["logits"])) < 1e-4
    assert model.plan.feature_shape.height == SIZE // output_stride


def test_aligned_fixtures_cover_the_five_aligned_variants() -> None:
    assert ALIGNED == ["xception41", "xception41p", "xception65", "xception65p", "xception71"]


def test_output_stride_plans_dilations_shapes_and_macs() -> None:
    plain = build_model(SPECS / "xception65.yaml", overrides=["input.size=64", "middle.repeat=1"])
    os8 = build_model(SPECS / "xception65.yaml", overrides=["input.size=64", "middle.repeat=1",
                                                            "output_stride=8"])
    assert plain.plan.feature_shape.as_tuple() == (2048, 2, 2)
    assert os8.plan.feature_shape.as_tuple() == (2048, 8, 8)
    assert os8.plan.total_macs > plain.plan.total_macs  # the later blocks run on larger maps
    assert [t.reduction for t in os8.plan.taps] == [2, 4, 8, 8, 8]
    dilations = {b.module_name: b.dilation for b in os8.plan.blocks}
    assert dilations["entry.blocks.2"] == 1 and dilations["middle.blocks.0"] == 2
    assert dilations["exit.blocks.0"] == 2 and dilations["exit.blocks.1"] == 4
    with torch.no_grad():
        out = os8.forward_features(torch.randn(1, 3, 64, 64))
    assert tuple(out.shape[1:]) == os8.plan.feature_shape.as_tuple()


def test_forward_intermediates_options() -> None:
    model = build_model(SPECS / "xception41p.yaml", overrides=["input.size=64", "middle.repeat=1"]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert len(maps) == len(model.feature_info) == 5
        assert [m.shape[1] for m in maps] == [i["num_chs"] for i in model.feature_info]
        # the last map is the last block's output; norm=True applies the closing activation
        _, normed = model.forward_intermediates(x, norm=True)
        assert torch.equal(normed[-1], final) and not torch.equal(maps[-1], final)
        assert torch.equal(normed[-1], torch.relu(maps[-1]))
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert isinstance(last_two, list) and [t.shape for t in last_two] == [m.shape for m in maps[-2:]]
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[-1])
        stopped, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early[0], maps[1]) and stopped.shape == maps[1].shape
        nhwc = model.forward_intermediates(x, indices=[0], output_fmt="NHWC", intermediates_only=True)
        assert torch.equal(nhwc[0], maps[0].permute(0, 2, 3, 1))
    with pytest.raises(UserError, match="out of range"):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(UserError, match="valid choices: NCHW, NHWC"):
        model.forward_intermediates(x, output_fmt="NLC")


def test_features_only_model_is_cut_after_its_last_map() -> None:
    spec = SPECS / "xception41.yaml"
    shrink = ["input.size=64", "middle.repeat=1"]
    full = build_model(spec, overrides=shrink).eval()
    cut = build_model(spec, overrides=shrink, features_only=True, out_indices=(0, 1)).eval()
    assert cut.feature_info.channels() == [128, 256] and cut.feature_info.reduction() == [2, 4]
    assert "exit.blocks.0.main.sep1.dw.weight" not in cut.state_dict()
    assert "head.fc.weight" not in cut.state_dict()
    assert "num_classes" not in cut.pretrained_cfg and cut.default_cfg is cut.pretrained_cfg
    cut.load_state_dict({k: v for k, v in full.state_dict().items() if k in cut.state_dict()})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=(0, 1), intermediates_only=True)
        actual = cut(x)
    assert all(torch.equal(a, b) for a, b in zip(actual, expected, strict=True))
    # a backward pass reaches every parameter the cut model kept, but the rest of the block that
    # holds the last map (timm keeps that block whole too)
    sum(m.mean() for m in cut(x)).backward()
    owner = cut.plan.taps[cut.out_indices[-1]].owner
    assert all(p.grad is not None for name, p in cut.named_parameters() if not name.startswith(owner + "."))


def test_prune_intermediate_layers_keeps_what_the_maps_need() -> None:
    model = build_model(SPECS / "xception.yaml", overrides=["input.size=71", "middle.repeat=1"]).eval()
    kept = model.prune_intermediate_layers(indices=3)
    assert kept == [2, 3, 4]
    assert model.num_classes == 0 and model.plan.head.pool == "none"
    x = torch.randn(1, 3, 71, 71)
    with torch.no_grad():
        assert model(x).shape == model.forward_features(x).shape  # head removed: the feature map
