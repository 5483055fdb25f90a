from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py, tests/spec_files.py

from spec_files import SPECS  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: torch's default of one intra-op thread per core oversubscribes the
    # machine and every small op then waits on a descheduled thread (measured 20x slower).
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def cifar_spec() -> Path:
    return SPECS / "xception_cifar.yaml"
