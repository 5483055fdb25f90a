"""`padding: same` in the spec: settable in defaults, per block and per conv entry; the planner's
shapes and MACs are what the module computes, at odd and even sizes alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from spec_files import SPECS

from xception_build import build_model, load_spec, plan_spec
from xception_build.layers import Conv2dSame, MaxPool2dSame

VARIANT = """
extends: {base}
name: one_block_same
entry:
  stem:
    - {{out: 32, kernel: 3, stride: 2, padding: same}}
    - {{out: 64, kernel: 3, stride: 1, padding: 0}}
  blocks:
    - {{out: 128, reps: 2, stride: 2, start_with_act: false, padding: same}}
    - {{out: 256, reps: 2, stride: 2}}
    - {{out: 728, reps: 2, stride: 2}}
"""


def _shapes(model: torch.nn.Module, size: int) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [module.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape[1:])))
             for name, module in model.named_modules() if name.count(".") == 2 and ".stem." in name + "."
             or name.count(".") == 2 and ".blocks." in name]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.mark.parametrize("size", [71, 72, 73, 74, 100, 101])
def test_planned_shapes_are_the_computed_ones(size: int) -> None:
    model = build_model(SPECS / "xception_keras.yaml", overrides=[f"input.size={size}", "middle.repeat=1"]).eval()
    assert _shapes(model, size) == [b.out_shape.as_tuple() for b in model.plan.blocks]


def test_padding_per_block_and_per_conv(tmp_path: Path) -> None:
    spec = tmp_path / "variant.yaml"
    spec.write_text(VARIANT.format(base=SPECS / "xception.yaml"))
    model = build_model(spec, overrides=["input.size=64", "middle.repeat=1"]).eval()
    modules = dict(model.named_modules())
    assert isinstance(modules["entry.stem.0.conv"], Conv2dSame)  # stride 2: worked out per input
    assert isinstance(modules["entry.blocks.0.main.pool"], MaxPool2dSame)
    assert type(modules["entry.blocks.1.main.pool"]) is torch.nn.MaxPool2d  # the defaults' symmetric
    assert type(modules["entry.blocks.0.main.sep1.dw"]) is torch.nn.Conv2d  # stride 1: a fixed padding
    assert _shapes(model, 64) == [b.out_shape.as_tuple() for b in model.plan.blocks]
    plain = plan_spec(load_spec(SPECS / "xception.yaml", ["input.size=64", "middle.repeat=1"]))
    same = model.plan
    assert same.blocks[0].out_shape.height == 32 and plain.blocks[0].out_shape.height == 31
    assert same.total_macs != plain.total_macs  # MACs follow the padding


@pytest.mark.parametrize(("size", "lopsided"), [(72, False), (75, True)])
def test_same_and_symmetric_differ_exactly_where_a_pool_pads_lopsidedly(size: int, lopsided: bool) -> None:
    """With shared weights the 'same' network equals the symmetric one while every stride-2 pool
    sees an odd size (1 and 1 either way: 72 -> 35 -> 33 -> 17 -> 9), and differs once one sees
    an even size (0 before, 1 after: 75 -> 37 -> 35 -> 18)."""
    overrides = [f"input.size={size}", "middle.repeat=1"]
    keras_like = build_model(SPECS / "xception_keras.yaml", overrides=[*overrides, "defaults.norm.eps=1.0e-5"]).eval()
    torch_like = build_model(SPECS / "xception.yaml", overrides=overrides).eval()
    torch_like.load_state_dict(keras_like.state_dict())
    pools = [b.in_shape.height for b in keras_like.plan.blocks if b.kind == "xception" and b.stride == 2]
    assert any(h % 2 == 0 for h in pools) == lopsided
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        same = torch.allclose(keras_like(x), torch_like(x), rtol=1e-5, atol=1e-6)
    assert same != lopsided
