"""Checkpoints: load and save weights, including timm-layout and Keras checkpoints.

Formats: safetensors (preferred: no pickle) and plain PyTorch state dicts, read only with
``torch.load(weights_only=True)``; Keras' HDF5 files through ``keras_weights``. A checkpoint is
checked whole before anything is copied, so a checkpoint that does not fit is refused with the
list of differences and never half-loaded. A features-only model takes a checkpoint of the whole
network it was cut from and keeps its part.

timm layouts (``legacy_xception``; the aligned ``xception41/65/71/41p/65p``) are translated by
structure, not by a table per model: both sides are cut into the same units (stem, each block,
head), each unit's tensors split by role (main path, shortcut, pre-activation), and the tensors
of each role are paired in order with their shapes checked. Our modules are registered in
forward order, as timm's are, so the pairing is the forward order of both networks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, Location
from .files import atomic_write
from .keras_weights import is_hdf5, keras_units
from .model import XceptionFeatures, XceptionNet, build_network

StateDict = dict[str, torch.Tensor]


# -- reading and writing files -------------------------------------------------------------

def read_checkpoint(path: str | os.PathLike[str]) -> StateDict:
    """Read a safetensors file or a torch state dict (``weights_only=True``) into tensors."""
    file = Path(path)
    where = Location(str(file))
    if not file.exists():
        raise CheckpointError("weights file not found", location=where)
    if file.is_dir():
        raise CheckpointError("is a directory, expected a weights file (.safetensors, .pt, .pth)", location=where)
    try:
        with file.open("rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise CheckpointError(f"cannot read the weights file: {exc.strerror}", location=where) from exc
    if not header:
        raise CheckpointError("the weights file is empty", location=where)
    if file.suffix == ".safetensors" or _looks_like_safetensors(header):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"not a readable safetensors file: {exc}", location=where) from exc
    try:
        loaded = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        # torch's own text is about its unpickler's internals ("pop from empty list"): not for users
        kind = "a zip or pickle file torch cannot read as a state dict" if header[:2] in (b"PK", b"\x80\x02") \
            else "neither a safetensors file nor a torch checkpoint"
        raise CheckpointError(f"not a weights file: {kind}", location=where,
                              hint="give a .safetensors file or a plain state dict saved with "
                              "torch.save(model.state_dict(), path); pickled models do not load "
                              "(weights_only=True)") from exc
    return _unwrap_state_dict(loaded, where)


def _looks_like_safetensors(header: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return len(header) > 8 and header[8:9] == b"{"


def _unwrap_state_dict(loaded: object, where: Location) -> StateDict:
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
            inner = loaded.get(wrapper)
            if isinstance(inner, Mapping):
                loaded = inner
                break
        tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(loaded):
            # Checkpoints saved from DDP or torch.compile carry a wrapper prefix on every key.
            for prefix in ("module.", "_orig_mod."):
                if all(k.startswith(prefix) for k in tensors):
                    tensors = {k[len(prefix):]: v for k, v in tensors.items()}
            return tensors
    raise CheckpointError("the file does not hold a state dict (a mapping of names to tensors)", location=where)


def save_weights(model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict as safetensors, atomically (``xception_build.files``).

    Raises ``OSError`` when the file cannot be written."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    try:
        atomic_write(path, save(state, metadata=metadata))
    except OSError as exc:  # keep errno (callers tell a full disk from a bug by it), name the file
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc


# -- fitting a state dict to the model -----------------------------------------------------

def _differences(model_state: StateDict, checkpoint: StateDict) -> list[str]:
    problems = [f"shape: {k} is {list(checkpoint[k].shape)} in the checkpoint, {list(v.shape)} in the model"
                for k, v in model_state.items() if k in checkpoint and checkpoint[k].shape != v.shape]
    problems += [f"missing: {k} {list(v.shape)}" for k, v in model_state.items() if k not in checkpoint]
    problems += [f"unexpected: {k} {list(v.shape)}" for k, v in checkpoint.items() if k not in model_state]
    return problems


# What explains a misfit best comes first: the structure, then shapes, then missing tensors, and
# last the unexpected ones (often mere buffers such as num_batches_tracked).
_CAUSE_ORDER = ("structure:", "shape:", "missing:", "unexpected:")


def _refuse(problems: list[str], source: str, layout: str) -> CheckpointError:
    problems = sorted(problems, key=lambda p: next((i for i, c in enumerate(_CAUSE_ORDER) if p.startswith(c)),
                                                   len(_CAUSE_ORDER)))
    shown = problems[:12]
    more = f"\n    ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return CheckpointError(
        f"checkpoint ({layout} layout) does not fit the model; nothing was loaded. Differences:\n    "
        + "\n    ".join(shown) + more, location=Location(source))


def full_network(model: XceptionNet | XceptionFeatures) -> XceptionNet:
    """The network checkpoints are matched against: the model itself, or for a features-only
    model the whole network it was cut from, built on the meta device (no memory, no data)."""
    if isinstance(model, XceptionNet):
        return model
    with torch.device("meta"):
        return build_network(model.full_plan, model.spec)


def _fit(model: XceptionNet | XceptionFeatures, network: XceptionNet, checkpoint: StateDict, source: str,
         layout: str) -> None:
    """Check a checkpoint in our names against the network (``full_network(model)``), then copy it
    in whole. A features-only model takes a checkpoint of its whole network and keeps the part it
    has (as timm's do)."""
    problems = _differences(network.state_dict(), checkpoint)
    if network is not model and problems and layout == "xception-build":
        problems = _differences(model.state_dict(), checkpoint)  # a checkpoint of the cut model itself
    if problems:
        raise _refuse(problems, source, layout)
    model_state = model.state_dict()
    converted = {k: v.to(dtype=model_state[k].dtype) for k, v in checkpoint.items() if k in model_state}
    model.load_state_dict(converted, strict=True)


def load_state(model: XceptionNet | XceptionFeatures, checkpoint: StateDict, source: str = "<state dict>") -> str:
    """Load a state dict in our layout or a timm layout; returns the layout name it read."""
    layout = detect_layout(checkpoint)
    network = full_network(model)
    if layout != "xception-build":
        checkpoint = translate_timm(network, checkpoint, layout, source)
    _fit(model, network, checkpoint, source, layout)
    return layout


def load_weights(model: XceptionNet | XceptionFeatures, path: str | os.PathLike[str]) -> str:
    """Read a weights file and load it into ``model`` whole, or raise ``CheckpointError``.

    Reads safetensors, torch state dicts (ours or timm's) and Keras' HDF5 files (Keras 2
    ``.h5``, Keras 3 ``.weights.h5``); returns the layout it read."""
    if is_hdf5(path):
        network = full_network(model)
        groups, tensors, problems = keras_units(network, path)
        checkpoint = pair_units(network, groups, tensors, "keras", str(path), problems, fill_batch_counts=True)
        _fit(model, network, checkpoint, str(path), "keras")
        return "keras"
    return load_state(model, read_checkpoint(path), str(path))


def detect_layout(checkpoint: Mapping[str, torch.Tensor]) -> str:
    keys = set(checkpoint)
    if any(k.startswith(("entry.", "middle.", "exit.")) for k in keys):
        return "xception-build"
    if any(k.startswith(("block1.", "conv1.")) for k in keys):
        return "timm-legacy"
    if any(k.startswith(("blocks.0.", "stem.0.")) for k in keys):
        return "timm-aligned"
    return "xception-build"  # nothing matches: report the differences in our own names


# -- timm layouts ------------------------------------------------------------------------------

# A unit id for each key: "stem", ("block", i) or "head"; and a role inside the unit.
_LEGACY_STEM = re.compile(r"^(conv1|bn1|conv2|bn2)\.")
_LEGACY_BLOCK = re.compile(r"^block(\d+)\.(skip|skipbn|rep)\.")
_LEGACY_TAIL = re.compile(r"^(conv3|bn3|conv4|bn4)\.")
_ALIGNED_BLOCK = re.compile(r"^blocks\.(\d+)\.(shortcut|norm|stack)\.")

UnitKey = tuple[str, int, str]  # (unit, block index, role)


def _legacy_unit(key: str, n_blocks: int) -> UnitKey | None:
    if _LEGACY_STEM.match(key):
        return ("stem", 0, "main")
    if match := _LEGACY_BLOCK.match(key):
        role = {"skip": "shortcut", "skipbn": "shortcut", "rep": "main"}[match.group(2)]
        return ("block", int(match.group(1)) - 1, role)
    if _LEGACY_TAIL.match(key):
        # conv3/bn3/conv4/bn4 form the exit tail: the block after the last numbered one.
        return ("block", n_blocks, "main")
    if key.startswith("fc."):
        return ("head", 0, "main")
    return None


def _aligned_unit(key: str, n_blocks: int) -> UnitKey | None:
    if key.startswith("stem."):
        return ("stem", 0, "main")
    if match := _ALIGNED_BLOCK.match(key):
        role = {"shortcut": "shortcut", "norm": "preact", "stack": "main"}[match.group(2)]
        return ("block", int(match.group(1)), role)
    if key.startswith("head.fc."):
        return ("head", 0, "main")
    return None


def _our_unit(model: XceptionNet) -> Callable[[str], UnitKey | None]:
    stems = {b.module_name for flow in model.plan.flows for b in flow.stem}
    blocks = [b.module_name for b in model.plan.flow_blocks]

    def unit(key: str) -> UnitKey | None:
        if any(key.startswith(name + ".") for name in stems):
            return ("stem", 0, "main")
        for index, name in enumerate(blocks):
            if key.startswith(name + "."):
                rest = key[len(name) + 1:]
                role = "shortcut" if rest.startswith("shortcut") else "preact" if rest.startswith("preact") else "main"
                return ("block", index, role)
        if key.startswith("head."):
            return ("head", 0, "main")
        return None

    return unit


def translate_timm(model: XceptionNet, checkpoint: StateDict, layout: str, source: str) -> StateDict:
    """Rename a timm checkpoint's keys to ours by pairing tensors unit by unit, role by role."""
    legacy_blocks = {int(m.group(1)) for k in checkpoint if (m := _LEGACY_BLOCK.match(k))}
    n_numbered = max(legacy_blocks, default=0)
    their_unit = ((lambda k: _legacy_unit(k, n_numbered)) if layout == "timm-legacy"
                  else (lambda k: _aligned_unit(k, n_numbered)))
    groups_theirs: dict[UnitKey, list[str]] = {}
    unplaced: list[str] = []
    for key in checkpoint:  # dicts keep the checkpoint's (forward) order
        unit = their_unit(key)
        if unit is None:
            unplaced.append(key)
        else:
            groups_theirs.setdefault(unit, []).append(key)
    problems = [f"unexpected: {k} (not part of a {layout} network)" for k in unplaced]
    return pair_units(model, groups_theirs, checkpoint, layout, source, problems)


def pair_units(model: XceptionNet, groups_theirs: Mapping[UnitKey, list[str]], tensors: Mapping[str, torch.Tensor],
               layout: str, source: str, problems: list[str], fill_batch_counts: bool = False) -> StateDict:
    """Our names for another layout's tensors, already grouped into units and roles: in each
    (unit, role) the tensors pair in order with ours, shapes checked. ``fill_batch_counts``: the
    other layout has no ``num_batches_tracked`` (Keras); ours start at zero."""
    ours = _our_unit(model)
    model_state = model.state_dict()
    groups_ours: dict[UnitKey, list[str]] = {}
    translated: StateDict = {}
    for key in model_state:
        if fill_batch_counts and key.endswith("num_batches_tracked"):
            translated[key] = torch.zeros_like(model_state[key], device="cpu")
            continue
        unit = ours(key)
        if unit is not None:
            groups_ours.setdefault(unit, []).append(key)
    problems = list(problems)
    their_blocks = len({u[1] for u in groups_theirs if u[0] == "block"})
    our_blocks = len({u[1] for u in groups_ours if u[0] == "block"})
    if their_blocks != our_blocks:
        # Said first: it explains the shape differences that follow from it.
        problems.insert(0, f"structure: the checkpoint has {their_blocks} blocks, the model {our_blocks} "
                           "(a checkpoint of another variant?)")
    for unit in sorted(set(groups_theirs) | set(groups_ours), key=lambda u: (["stem", "block", "head"].index(u[0]),
                                                                                u[1], u[2])):
        theirs, mine = groups_theirs.get(unit, []), groups_ours.get(unit, [])
        for their_key, our_key in zip(theirs, mine, strict=False):  # leftovers reported below
            tensor = tensors[their_key]
            if tensor.shape != model_state[our_key].shape:
                problems.append(f"shape: {their_key} is {list(tensor.shape)}, the model's {our_key} is "
                                f"{list(model_state[our_key].shape)}")
            translated[our_key] = tensor
        problems += [f"unexpected: {k} {list(tensors[k].shape)}" for k in theirs[len(mine):]]
        problems += [f"missing: {k} {list(model_state[k].shape)}" for k in mine[len(theirs):]]
    if problems:
        raise _refuse(problems, source, layout)
    return translated
