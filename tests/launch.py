"""Starting training processes from tests: plain Python, or PyTorch's torchrun (``torch.distributed.run``).

Every process is limited to one intra-op thread: the CI machine has two cores, and a test may run
two ranks next to another test's (pytest -n 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train.py"
WORKER = ROOT / "tests" / "training" / "ddp_worker.py"
CIFAR = ROOT / "specs" / "xception_cifar.yaml"
#: middle.repeat=1: a quarter of the small spec's middle flow (every block kind remains); dropout off
SMALL = ["--set", "middle.repeat=1", "--set", "head.dropout=0"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def python(script: Path, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python script args`` in a fresh process, as a user runs it without torchrun."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=ROOT)


def torchrun(nproc: int, script: Path, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node N script args`` (--standalone: a free port, so tests can overlap)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(script), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    """The end of a process's output, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
