"""Recipes (the paper's schedule, the modern one), gradient accumulation and the options' checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xception_build.errors import UserError
from xception_build.recipes import RECIPES, lr_factor, recipe
from xception_build.training import TrainOptions, TrainStep


def _net(batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    norm: list[nn.Module] = [nn.BatchNorm2d(8)] if batchnorm else []
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def _lrs_per_epoch(options: TrainOptions, steps_per_epoch: int, epochs: int) -> list[float]:
    """The learning rate of the first step of each epoch, read from the optimizer while training."""
    step = TrainStep(_net(), "cpu", options)
    step.plan_schedule(steps_per_epoch, epochs)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(4, (4,))
    rates = []
    for _ in range(epochs):
        rates.append(step.optimizer.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            step(x, y)
    return rates


def test_the_paper_recipe_is_sgd_with_momentum_and_0_94_decay_every_two_epochs() -> None:
    options = TrainOptions(**recipe("paper"))
    step = TrainStep(_net(), "cpu", options)
    assert isinstance(step.optimizer, torch.optim.SGD)
    group = step.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["lr"] == 0.045 and not group["nesterov"]
    assert group["weight_decay"] == 1e-5 and step.optimizer.param_groups[1]["weight_decay"] == 0.0  # not on BN
    expected = [0.045 * 0.94 ** (epoch // 2) for epoch in range(7)]
    assert _lrs_per_epoch(options, 3, 7) == pytest.approx(expected, rel=1e-12)
    assert TrainOptions() == options  # the defaults are the paper's recipe


def test_the_modern_recipe_warms_up_linearly_then_follows_a_cosine_to_zero() -> None:
    options = TrainOptions(**recipe("modern"))
    step = TrainStep(_net(), "cpu", options)
    assert isinstance(step.optimizer, torch.optim.AdamW)
    assert step.optimizer.param_groups[0]["weight_decay"] == 0.05 and step.loss_fn.label_smoothing == 0.1
    factor = lr_factor("cosine", steps_per_epoch=10, total_steps=100, warmup_steps=20)
    assert [factor(s) for s in (0, 9, 19)] == pytest.approx([0.05, 0.5, 1.0])
    assert factor(20) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5)
    assert factor(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 79 / 80)))
    # 5 warm-up epochs, at most a fifth of the run: a 10-epoch run warms up for 2
    rates = _lrs_per_epoch(options, 2, 10)
    assert rates[0] == pytest.approx(1e-3 / 4) and rates[2] == pytest.approx(1e-3)
    assert rates[3:] == sorted(rates[3:], reverse=True) and rates[-1] < 0.1 * 1e-3


def test_accumulating_two_micro_batches_takes_the_step_of_one_batch_twice_as_large() -> None:
    """Exact without BatchNorm (BN normalises each micro-batch by itself, which is the one difference)."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8, generator=gen), torch.randint(4, (8,), generator=gen)
    whole = TrainStep(_net(batchnorm=False), "cpu", TrainOptions())
    parts = TrainStep(_net(batchnorm=False), "cpu", TrainOptions(accumulate=2))
    whole.plan_schedule(1, 4)
    parts.plan_schedule(1, 4)
    for _ in range(3):
        whole(x, y)
        parts(x[:4], y[:4])
        assert not parts.stepped and parts.optimizer_steps == whole.optimizer_steps - 1
        parts(x[4:], y[4:])
        assert parts.stepped and parts.optimizer_steps == whole.optimizer_steps
    for a, b in zip(whole.module.parameters(), parts.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert parts.scheduler is not None and parts.scheduler.last_epoch == 3  # one schedule step per optimizer step


def test_unknown_recipes_and_out_of_range_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="paper, modern"):
        recipe("imagenet-2012")
    with pytest.raises(UserError, match="accumulate .* at least|accumulate = 0 .* integer >= 1"):
        TrainOptions(accumulate=0)
    with pytest.raises(UserError, match="step, cosine, constant"):
        TrainOptions(schedule="linear")
    with pytest.raises(UserError, match="label_smoothing = 1.5"):
        TrainOptions(label_smoothing=1.5)
    assert set(RECIPES) == {"paper", "modern"}
