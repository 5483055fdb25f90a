"""Resume checkpoints: everything a run needs to continue exactly where it stopped.

A training run writes two files at the end of every epoch (rank 0 only):

- the weights, ``NAME.safetensors``: the plain model, what ``xbuild export --weights`` and
  ``xception_build.weights.load_weights`` read (:func:`xception_build.training.save_checkpoint`);
- the resume state, ``NAME.resume.pt`` (:func:`resume_path`): model, optimizer, schedule and grad
  scaler state dicts, the epoch and optimizer step reached, every rank's RNG states, the sampler's
  seed and the resolved spec, plus the settings the run was started with.

The resume state holds only tensors and plain Python values (dicts, lists, strings, numbers), so
it loads with ``torch.load(weights_only=True)``, which executes nothing from the file. Both files
are written atomically (temp file, fsync, rename): a run killed while saving leaves the previous
checkpoint whole. The resume state is written first: if a run dies between the two writes, the
weights file lags one epoch behind, and resuming still continues from the newer state.

What makes resuming exact: the data order is a function of (seed, epoch) (``DistributedSampler``)
and augmentation of (seed, epoch, image) (:mod:`xception_build.datasets`), so neither needs
state beyond the epoch; dropout draws from each rank's global torch RNG, restored per rank.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from xception_build.errors import CheckpointError, Location, UserError
from xception_build.files import atomic_write

if TYPE_CHECKING:
    from xception_build.training import TrainStep

FORMAT = "xception-build training state"
VERSION = 1
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "model": dict, "optimizer": dict, "scheduler": (dict, type(None)), "scaler": dict, "epoch": int, "step": int,
    "epochs": int, "seed": int, "rng": list, "spec": str, "config": dict, "history": list}


def resume_path(weights: str | Path) -> Path:
    """``runs/ckpt.safetensors`` -> ``runs/ckpt.resume.pt``: the resume state beside its weights file."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}.resume.pt")


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (torch CPU, this CUDA device, Python, NumPy) as tensors and plain values."""
    import numpy as np

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Undo :func:`capture_rng`: the RNGs continue from where the saved run's were."""
    import numpy as np

    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a resume state atomically; raises OSError (naming the file) when it cannot be written."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, buffer.getvalue())
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read and check a resume state written by :func:`save_training_state` (``weights_only=True``)."""
    path = Path(path)
    where = Location(str(path))
    if path.suffix == ".safetensors":
        raise UserError(f"{path} is a weights file; --resume takes the resume state written beside it",
                        hint=f"--resume {resume_path(path)}")
    if not path.is_file():
        raise CheckpointError("resume state not found" if not path.exists() else "not a file", location=where)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"not a readable resume state: {reason}", location=where) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"not a resume state of xception-build (expected a {FORMAT!r} file, "
                              "as examples/train.py writes beside its weights)", location=where)
    if state.get("version") != VERSION:
        raise CheckpointError(f"resume state version {state.get('version')!r}; this version reads {VERSION}",
                              location=where)
    wrong = [name for name, kind in _REQUIRED.items() if not isinstance(state.get(name), kind)]
    if wrong:
        raise CheckpointError(f"resume state is incomplete or damaged: {', '.join(wrong)} missing or malformed",
                              location=where)
    return state


def state_of(step: TrainStep, *, epoch: int, epochs: int, seed: int, rng: list[dict[str, Any]], spec: str,
             config: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The resume state of ``step`` after ``epoch`` completed epochs of ``epochs`` planned.

    ``rng``: every rank's :func:`capture_rng`, in rank order; ``spec``: the resolved spec (YAML);
    ``config``: the run's settings (options, batch size, ranks), compared on resume;
    ``history``: one dict of plain numbers per finished epoch.
    """
    from xception_build.training import unwrap

    return {"model": unwrap(step.model).state_dict(), "optimizer": step.optimizer.state_dict(),
            "scheduler": None if step.scheduler is None else step.scheduler.state_dict(),
            "scaler": step.scaler.state_dict(), "epoch": epoch, "step": step.optimizer_steps, "epochs": epochs,
            "seed": seed, "rng": rng, "spec": spec, "config": config, "history": history}


def restore_step(step: TrainStep, state: dict[str, Any], source: str = "<resume state>") -> None:
    """Load model, optimizer, schedule, grad scaler and step count of ``state`` into ``step``.

    Plan the schedule first (``step.plan_schedule``): its position is restored into it.
    """
    from xception_build.training import unwrap

    where = Location(source)
    try:
        unwrap(step.model).load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the model in the resume state does not fit this spec: {str(exc).splitlines()[0]}",
                              location=where) from exc
    try:
        step.optimizer.load_state_dict(state["optimizer"])
        if step.scheduler is not None and state["scheduler"] is not None:
            step.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and step.scaler.is_enabled():
            step.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"the optimizer state does not fit this run's optimizer: {exc}",
                              hint="resume with the recipe and optimizer the run started with",
                              location=where) from exc
    step.optimizer_steps = state["step"]
