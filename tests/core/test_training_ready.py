"""Ready for GPU training: autocast, channels_last, torch.compile without graph breaks, DDP, and
in-place activations that never corrupt a tensor the shortcut still reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from spec_files import SPECS
from torch import nn

from xception_build import build_model

# One small network per block design: the paper's, the aligned one, the pre-activation one.
DESIGNS = {
    "paper": (SPECS / "xception_cifar.yaml", []),
    "aligned": (SPECS / "xception41.yaml", ["input.size=64", "middle.repeat=1"]),
    "preact": (SPECS / "xception41p.yaml", ["input.size=64", "middle.repeat=1"]),
}


def _model(design: str, **kwargs: object) -> nn.Module:
    path, overrides = DESIGNS[design]
    return build_model(path, overrides=overrides, **kwargs)


def _input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_gradients_match_an_out_of_place_copy(design: str) -> None:
    """In-place activations must give exactly the gradients of the same network without them."""
    model = _model(design).train()
    reference = _model(design).train()
    for module in reference.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    assert any(getattr(m, "inplace", False) for m in model.modules()), "the fast path uses in-place ops"
    x = _input(model)
    torch.manual_seed(0)  # the same dropout mask for both
    model(x).square().mean().backward()
    torch.manual_seed(0)
    reference(x).square().mean().backward()
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_bf16_autocast_forward_backward(design: str) -> None:
    model = _model(design).train()
    x = _input(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().logsumexp(1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs a CUDA GPU")
def test_fp16_autocast_on_gpu() -> None:
    model = _model("paper").cuda().train()
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(_input(model).cuda())
    assert out.dtype == torch.float16


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_channels_last_gives_the_same_outputs(design: str) -> None:
    model = _model(design).eval()
    x = _input(model)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        features = model.forward_features(x.to(memory_format=torch.channels_last))
        actual = model.forward_head(features)
    assert features.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_torch_compile_has_no_graph_breaks(design: str) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    model = _model(design).train()
    explanation = torch._dynamo.explain(model)(_input(model))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_torch_compile_runs_and_matches_eager() -> None:
    model = _model("paper").eval()
    x = _input(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_ddp_trains_a_step(tmp_path: Path) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    init_file = tmp_path / "ddp_init"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(_model("paper"))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = _input(model.module, batch=4)
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        optimizer.step()
        assert all(p.grad is not None for p in model.parameters()), "every parameter is used"
    finally:
        dist.destroy_process_group()
