"""Training recipes: the paper's ImageNet schedule and a common modern one, as ``TrainOptions`` values.

``paper``: Chollet (2017), section 4.3 — SGD with momentum 0.9, learning rate 0.045 decayed by a
factor of 0.94 every 2 epochs, weight decay 1e-5. (The paper's dropout of 0.5 before the
classifier is a property of the network: the spec's ``head.dropout``.)

``modern``: the recipe most current CNN training uses (timm, torchvision's "new recipes"): AdamW,
weight decay 0.05, label smoothing 0.1, a linear warm-up over the first epochs and a cosine decay
to zero over the rest.

The learning rate is the one for the global batch (``batch size × processes × accumulation``);
nothing rescales it when that changes, so one process with batch 2B and two with batch B train
the same way (``tests/training``). The schedule is a per-optimizer-step ``LambdaLR``: its
position is ``last_epoch`` in its state dict, which resume checkpoints store.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from xception_build.errors import UserError

SCHEDULE_CHOICES = ("step", "cosine", "constant")

#: recipe name -> TrainOptions fields
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"optimizer": "sgd", "lr": 0.045, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-5,
              "label_smoothing": 0.0, "schedule": "step", "decay_rate": 0.94, "decay_epochs": 2.0,
              "warmup_epochs": 0.0},
    "modern": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "label_smoothing": 0.1,
               "schedule": "cosine", "warmup_epochs": 5.0},
}


def recipe(name: str) -> dict[str, Any]:
    """The ``TrainOptions`` fields of a named recipe (a copy), or a UserError listing the names."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def lr_factor(schedule: str, *, steps_per_epoch: int, total_steps: int, warmup_steps: int = 0,
              decay_rate: float = 0.94, decay_epochs: float = 2.0) -> Callable[[int], float]:
    """The multiplier of the base learning rate for optimizer step ``s`` (0-based).

    ``warmup_steps`` rises linearly to 1 first (any schedule). Then ``step``: ``decay_rate`` to the
    power of the number of whole ``decay_epochs`` periods completed (the paper's staircase);
    ``cosine``: half a cosine from 1 down to 0 at ``total_steps``; ``constant``: 1.
    """
    if schedule not in SCHEDULE_CHOICES:
        raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULE_CHOICES)}")
    steps_per_epoch = max(1, steps_per_epoch)
    period = max(1, round(decay_epochs * steps_per_epoch))
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        if schedule == "step":
            return float(decay_rate ** (s // period))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup_steps) / decay_steps)))
        return 1.0

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, options: Any, steps_per_epoch: int,
                   epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule ``options`` describes over ``epochs`` epochs of ``steps_per_epoch`` steps.

    The warm-up lasts ``options.warmup_epochs`` but at most a fifth of the run, so that short runs
    (tests, quick checks) still spend most of their steps at the full rate.
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = min(round(options.warmup_epochs * steps_per_epoch), total // 5)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(
        options.schedule, steps_per_epoch=steps_per_epoch, total_steps=total, warmup_steps=warmup,
        decay_rate=options.decay_rate, decay_epochs=options.decay_epochs))
