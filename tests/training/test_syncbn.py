"""CPU SyncBatchNorm in a two-process gloo group against BatchNorm2d on the concatenated batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from xception_build.syncbn import CPUSyncBatchNorm, convert_sync_batchnorm

CASES = ("fp32", "channels_last", "bf16")


def _batch(case: str) -> torch.Tensor:
    x = torch.randn(6, 5, 4, 3, generator=torch.Generator().manual_seed(0)) * 3 + 1  # 2 ranks x 3 images
    if case == "bf16":  # what a convolution under bf16 autocast hands the norm
        return x.to(torch.bfloat16)
    return x.contiguous(memory_format=torch.channels_last) if case == "channels_last" else x


def _reference(case: str) -> dict[str, torch.Tensor]:
    """Plain BatchNorm2d over all 6 images: what both ranks together must compute."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    x = _batch(case).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16"):
        y = bn(x)
    (y.float() * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()
    return {"y": y.detach().float(), "dx": x.grad.float(), "dw": bn.weight.grad, "db": bn.bias.grad,
            "mean": bn.running_mean, "var": bn.running_var, "dtype": str(y.dtype)}


def _rank(rank: int, init: str, case: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(5)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        model = convert_sync_batchnorm(nn.Sequential(bn), torch.device("cpu"))
        assert isinstance(model[0], CPUSyncBatchNorm)
        x = _batch(case)
        weights = torch.arange(x.numel()).view_as(x).float().sin()
        x = x[3 * rank:3 * rank + 3].detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16"):
            y = model(x)
        # DDP averages parameter gradients over ranks; here the loss is a sum, so the ranks' shares add up
        (y.float() * weights[3 * rank:3 * rank + 3]).sum().backward()
        dw, db = model[0].weight.grad.clone(), model[0].bias.grad.clone()
        dist.all_reduce(dw)
        dist.all_reduce(db)
        torch.save({"y": y.detach().float(), "dx": x.grad.float(), "dw": dw, "db": db, "dtype": str(y.dtype),
                    "mean": model[0].running_mean, "var": model[0].running_var}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", CASES)
def test_cpu_sync_batchnorm_over_two_processes_is_batchnorm_over_the_whole_batch(tmp_path: Path, case: str) -> None:
    torch.set_num_threads(1)
    mp.spawn(_rank, args=(f"file://{tmp_path / 'init'}", case, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    expected = _reference(case)
    tol = {"rtol": 2e-2, "atol": 2e-2} if case == "bf16" else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), expected["y"], **tol)
    torch.testing.assert_close(torch.cat([r["dx"] for r in ranks]), expected["dx"], **tol)
    for name in ("dw", "db", "mean", "var"):
        torch.testing.assert_close(ranks[0][name], expected[name], **tol, msg=name)
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    assert ranks[0]["dtype"] == expected["dtype"]  # bf16 in, bf16 out, as BatchNorm2d under autocast


def test_outside_a_process_group_it_is_plain_batchnorm() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(5)
    synced = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(5)), torch.device("cpu"))[0]
    x = torch.randn(4, 5, 3, 3)
    torch.testing.assert_close(synced(x), plain(x))
    assert set(synced.state_dict()) == set(plain.state_dict())  # checkpoints load into the plain model
