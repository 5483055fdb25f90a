"""BatchNorm calibration: running statistics recomputed from data.

A freshly initialised network has BatchNorm running statistics of (0, 1), so in eval mode no
norm normalises anything and activations grow block after block (the residual adds double the
variance each time). Exports of such a network are verified on numbers of arbitrary scale. After
calibration every norm sees the statistics of its actual input, activations stay near unit
scale, and a wrong weight anywhere shows in the logits. Training uses the same step to refresh
statistics before evaluation ("precise BN").
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm's running mean and variance to the average over ``batches``.

    Only the statistics change (no parameter is touched); the model's train/eval mode and each
    norm's momentum are restored. Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: equal weight for every batch
    model.train()
    count = 0
    try:
        for batch in batches:
            model(batch)
            count += 1
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return count


def seeded_inputs(input_size: tuple[int, ...], *, batches: int = 2, batch_size: int = 8,
                  seed: int = 0) -> list[torch.Tensor]:
    """Normal random images of the model's input size, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, *input_size, generator=generator) for _ in range(batches)]
