"""Loading weights from tests: a refused file must leave the model exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xception_build.errors import CheckpointError
from xception_build.weights import load_weights


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def refused(model: torch.nn.Module, path: Path) -> str:
    """The message ``load_weights`` refuses ``path`` with, once it is shown that nothing was loaded."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(model, path)
    assert same_state(before, model.state_dict()), "a refused checkpoint must leave the model untouched"
    return str(info.value)
