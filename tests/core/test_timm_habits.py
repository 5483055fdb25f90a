"""timm's ``tests/test_models.py`` as a yardstick, for every shipped spec: forward, backward,
default cfgs (first_conv, classifier, head_hidden_size, reset_classifier(0) and (0, '')),
TorchScript, features_only, forward_intermediates, torch.fx forward and backward (and the fx
graph scripted), torch.export. timm cannot be installed here (it needs a CUDA torch), so its
checks are kept here, with input sizes small enough for a CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx
from spec_files import SPECS, shipped_specs

from xception_build import build_model, load_spec
from xception_build.errors import SpecError, UserError

SPEC_FILES = shipped_specs()
IDS = [p.stem for p in SPEC_FILES]


def _shrink(spec: Path, size: int = 64) -> list[str]:
    """Small inputs and one middle block: every block kind of the spec, at a fraction of the cost."""
    return [] if spec.stem == "xception_cifar" else [f"input.size={size}", "middle.repeat=1"]


def _input(model: Any, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", SPEC_FILES, ids=IDS)
def test_forward_and_backward(spec: Path) -> None:
    model = build_model(spec, overrides=_shrink(spec), num_classes=42).train()
    out = model(_input(model))
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("spec", SPEC_FILES, ids=IDS)
def test_default_cfgs(spec: Path) -> None:
    model = build_model(spec, overrides=_shrink(spec)).eval()
    cfg = model.default_cfg
    assert cfg is model.pretrained_cfg
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state
    assert cfg["classifier"] + ".weight" in state
    x = _input(model, batch=1)
    with torch.no_grad():
        features = model.forward_features(x)
        pre = model.forward_head(features, pre_logits=True)
        assert tuple(features.shape[2:]) == cfg["pool_size"] and features.shape[1] == model.num_features
        assert pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        model.reset_classifier(0, "")
        assert model(x).shape == features.shape
        unpooled = build_model(spec, overrides=_shrink(spec), num_classes=0, global_pool="").eval()
        assert unpooled(x).shape == features.shape


def test_reset_classifier_keeps_spec_and_plan_in_agreement(cifar_spec: Path) -> None:
    model = build_model(cifar_spec)
    model.reset_classifier(10, global_pool="max")
    assert model.spec is not None
    assert (model.spec.head.pool, model.spec.head.num_classes) == ("max", 10)
    assert (model.plan.head.pool, model.plan.head.num_classes) == ("max", 10)
    model.reset_classifier(0, "")
    assert (model.spec.head.pool, model.plan.head.pool, model.spec.head.num_classes) == ("none", "none", 0)
    assert model.spec.source is not None  # still knows where it came from
    with pytest.raises(UserError, match="needs pooled features"):
        model.reset_classifier(5, "")
    with pytest.raises(UserError, match="valid choices"):
        model.reset_classifier(5, "mean")


def test_keyword_overrides_are_spec_overrides(cifar_spec: Path) -> None:
    model = build_model(cifar_spec, num_classes=3, drop_rate=0.5, global_pool="max")
    assert model.num_classes == 3 and model.spec is not None
    assert (model.spec.head.num_classes, model.spec.head.dropout, model.spec.head.pool) == (3, 0.5, "max")
    spec = load_spec(cifar_spec)
    assert build_model(spec, num_classes=7).num_classes == 7  # a Spec object takes them too
    assert build_model(cifar_spec, output_stride=8).plan.output_stride == 8
    with pytest.raises(TypeError, match="did you mean 'num_classes'"):
        build_model(cifar_spec, num_class=3)
    with pytest.raises(SpecError, match="output_stride"):
        build_model(cifar_spec, output_stride=4)
    with pytest.raises(UserError, match="checkpoint_path"):
        build_model(cifar_spec, pretrained=True)
    with pytest.raises(SpecError, match="pool: none"):
        build_model(cifar_spec, global_pool="")  # a classifier needs pooled features


def test_spec_path_of_an_unknown_module_is_an_error() -> None:
    model = build_model(SPECS / "xception.yaml", overrides=["middle.repeat=2"])
    assert model.spec_path_of("exit.blocks.1.main.sep2.pw") == "exit.blocks[1]"
    assert model.spec_path_of("head.fc") == "head"
    with pytest.raises(UserError, match="no module named 'middle.blocks.9'") as err:
        model.spec_path_of("middle.blocks.9")
    assert err.value.hint is not None and "middle.blocks.0" in err.value.hint


@pytest.mark.parametrize("spec", SPEC_FILES, ids=IDS)
def test_torchscript(spec: Path) -> None:
    model = build_model(spec, overrides=_shrink(spec)).eval()
    scripted = torch.jit.script(model)
    x = _input(model, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("spec", SPEC_FILES, ids=IDS)
def test_features_only(spec: Path) -> None:
    model = build_model(spec, overrides=_shrink(spec, 96), features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    x = _input(model, batch=1)
    with torch.no_grad():
        maps = model(x)
    assert len(maps) == len(channels)
    side = x.shape[-1]
    for c, r, m in zip(channels, reductions, maps, strict=True):
        assert m.shape[1] == c and m.shape[0] == 1
        assert m.shape[2] <= math.ceil(side / r) + 1 and m.shape[3] <= math.ceil(side / r) + 1
        assert not torch.isnan(m).any()


@pytest.mark.parametrize("spec", SPEC_FILES, ids=IDS)
def test_forward_intermediates(spec: Path) -> None:
    model = build_model(spec, overrides=_shrink(spec, 96)).eval()
    x = _input(model, batch=1)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
    assert [m.shape[1] for m in maps] == [i["num_chs"] for i in model.feature_info]
    for info, m in zip(model.feature_info, maps, strict=True):
        assert m.shape[2] <= math.ceil(x.shape[-1] / info["reduction"]) + 1


@pytest.mark.parametrize("spec", SPEC_FILES, ids=IDS)
def test_fx_forward_backward_and_script(spec: Path) -> None:
    """What torchvision's create_feature_extractor and FX tools run: symbolic_trace."""
    model = build_model(spec, overrides=_shrink(spec)).eval()
    graph = torch.fx.symbolic_trace(model)
    x = _input(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
        torch.testing.assert_close(torch.jit.script(graph)(x), model(x))
    trained = torch.fx.symbolic_trace(build_model(spec, overrides=_shrink(spec), num_classes=42).train())
    out = trained(x)
    out.mean().backward()
    assert out.shape == (2, 42) and all(p.grad is not None for p in trained.parameters())
    features = build_model(spec, overrides=_shrink(spec), features_only=True).eval()
    traced = torch.fx.symbolic_trace(features)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(traced(x), features(x), strict=True))


@pytest.mark.parametrize("spec", SPEC_FILES, ids=IDS)
def test_torch_export(spec: Path) -> None:
    model = build_model(spec, overrides=_shrink(spec)).eval()
    x = _input(model)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))
