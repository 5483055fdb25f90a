"""Keras Xception weights, read with h5py (no TensorFlow, no Keras).

Two layouts hold the same tensors:

- Keras 2 HDF5 (``xception_weights_tf_dim_ordering_tf_kernels[_notop].h5``, ``save_weights`` to
  ``.h5``; a full ``model.save`` nests it under ``model_weights``): the ``layer_names``
  attribute lists the layers in model order; each layer's group lists ``weight_names``
  (``block2_sepconv1/depthwise_kernel:0``) naming its datasets.
- Keras 3 ``.weights.h5``: ``layers/<class>[_n]/vars/0..k``, groups named after the layer's
  class and numbered in model order, the layer's own name in the ``name`` attribute of
  ``vars`` (written since Keras 3.6).

Keras names the layers of its Xception by place: ``block1_conv{1,2}`` (the stem),
``block{b}_sepconv{s}`` and their ``_bn``, ``predictions``; the residual projections are the
unnamed ``conv2d``/``batch_normalization`` layers, in order. Those names group the tensors into
the units the timm import uses (stem, each block's main path and shortcut, head), and
``weights.pair_units`` (called by ``weights.load_weights``) pairs them with ours in order,
shapes checked: a file of another architecture is refused with the list of differences, and
nothing is loaded.

The layout changes (TensorFlow kernels are height, width, in, out) happen in :func:`to_torch`,
once, for every kind of layer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, Location
from .model import XceptionNet

UnitKey = tuple[str, int, str]  # (unit, block index, role): the grouping ``weights.pair_units`` pairs
StateDict = dict[str, torch.Tensor]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Keras 3 class groups and the order of their variables (``save_own_variables``).
_KERAS3_VARIABLES = {
    "conv2d": ("kernel", "bias"),
    "separable_conv2d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}
_BLOCK_NAME = re.compile(r"^block(\d+)_(conv|sepconv)(\d+)(_bn)?$")


@dataclass
class KerasLayer:
    """One Keras layer with weights: its name, what it is, and its arrays by role (``kernel``...)."""

    name: str
    kind: str  # conv, sepconv, bn or dense
    arrays: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)


def is_hdf5(path: str | os.PathLike[str]) -> bool:
    try:
        with Path(path).open("rb") as handle:
            return handle.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def to_torch(kind: str, role: str, array: np.ndarray[Any, Any]) -> torch.Tensor:
    """A Keras array in PyTorch's layout: conv kernels (h, w, in, out) -> (out, in, h, w);
    depthwise kernels (h, w, in, multiplier) -> (in * multiplier, 1, h, w), channel ``c * m + j``
    as in both frameworks; dense kernels (in, out) -> (out, in). Everything else as it is."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if role in ("kernel", "pointwise_kernel") and tensor.ndim == 4:
        return tensor.permute(3, 2, 0, 1).contiguous()
    if role == "depthwise_kernel" and tensor.ndim == 4:
        height, width, channels, multiplier = tensor.shape
        return tensor.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width).contiguous()
    if role == "kernel" and kind == "dense" and tensor.ndim == 2:
        return tensor.t().contiguous()
    return tensor


def _layer(name: str, arrays: dict[str, np.ndarray]) -> KerasLayer:
    """A layer, its kind told by the roles of its arrays (the same rule for both file layouts)."""
    kernel = arrays.get("kernel")
    if "depthwise_kernel" in arrays:
        kind = "sepconv"
    elif "gamma" in arrays or "moving_mean" in arrays:
        kind = "bn"
    elif kernel is not None:
        kind = "conv" if kernel.ndim == 4 else "dense"
    else:
        kind = "unknown"
    return KerasLayer(name, kind, arrays)


def _attr_list(group: Any, name: str) -> list[str]:
    """A list attribute, also when Keras split a long one into ``name0``, ``name1``..."""
    values: list[Any] = list(group.attrs[name]) if name in group.attrs else []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(group.attrs[f"{name}{chunk}"])
        chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_keras2(group: Any, where: Location) -> list[KerasLayer]:
    layers = []
    for name in _attr_list(group, "layer_names"):
        if name not in group:
            raise CheckpointError(f"layer {name!r} is listed in layer_names but has no group", location=where)
        layer_group = group[name]
        arrays = {}
        for weight in _attr_list(layer_group, "weight_names"):
            role = weight.rsplit("/", 1)[-1].split(":")[0]
            arrays[role] = np.asarray(layer_group[weight])
        if arrays:
            layers.append(_layer(name, arrays))
    return layers


def _read_keras3(root: Any, where: Location) -> list[KerasLayer]:
    found = []
    for group_name, group in root["layers"].items():
        if "vars" not in group or not len(group["vars"]):
            continue
        match = re.fullmatch(r"(.+?)(?:_(\d+))?", group_name)
        kind_name, number = (match.group(1), int(match.group(2) or 0)) if match else (group_name, 0)
        variables = group["vars"]
        name = variables.attrs.get("name")
        if name is None:
            raise CheckpointError(
                "this .weights.h5 names no layers (it was written by a Keras before 3.6), so its layers "
                "cannot be told apart", location=where,
                hint="load it into keras.applications.Xception with a current Keras and save_weights again")
        roles = _KERAS3_VARIABLES.get(kind_name, ())
        arrays = {roles[int(i)] if int(i) < len(roles) else i: np.asarray(variables[i])
                  for i in sorted(variables, key=int)}
        found.append((kind_name, number, _layer(name.decode() if isinstance(name, bytes) else str(name), arrays)))
    # Groups are numbered per class in model order: that order is kept within each class.
    return [layer for _, _, layer in sorted(found, key=lambda item: (item[0], item[1]))]


def read_keras(path: str | os.PathLike[str]) -> list[KerasLayer]:
    """The layers with weights of a Keras HDF5 file, in model order within each kind."""
    import h5py

    where = Location(str(path))
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" in handle.attrs or "layer_names0" in handle.attrs:
                return _read_keras2(handle, where)
            if "model_weights" in handle:
                return _read_keras2(handle["model_weights"], where)
            if "layers" in handle:
                return _read_keras3(handle, where)
    except OSError as exc:
        raise CheckpointError(f"not a readable HDF5 file: {exc}", location=where) from exc
    raise CheckpointError("an HDF5 file, but not Keras weights: no layer_names (Keras 2) and no layers group "
                          "(Keras 3 .weights.h5)", location=where)


def _units(layers: list[KerasLayer], model: XceptionNet) -> tuple[dict[UnitKey, list[str]], StateDict, list[str]]:
    """Group Keras' tensors (in PyTorch layout) into the units and roles of the timm import."""
    groups: dict[UnitKey, list[str]] = {}
    tensors: StateDict = {}
    problems: list[str] = []
    named: list[tuple[tuple[int, int, int, int], KerasLayer]] = []
    anonymous: dict[str, list[KerasLayer]] = {"conv": [], "bn": []}
    for layer in layers:
        if (match := _BLOCK_NAME.match(layer.name)) is not None:
            block, what, index, bn = match.groups()
            named.append(((int(block), 0 if what == "conv" else 1, int(index), 1 if bn else 0), layer))
        elif layer.kind in anonymous:
            anonymous[layer.kind].append(layer)
        elif layer.kind == "dense":
            named.append(((1 << 30, 0, 0, 0), layer))
        else:
            problems.append(f"unexpected: layer {layer.name} (not part of a Keras Xception)")
    blocks = sorted({order[0] for order, layer in named if order[1] == 1})
    for order, layer in sorted(named, key=lambda item: item[0]):
        unit: UnitKey = (("head", 0, "main") if layer.kind == "dense" else ("stem", 0, "main") if order[1] == 0
                         else ("block", blocks.index(order[0]), "main"))
        _add(groups, tensors, unit, layer)
    keys = list(model.state_dict())
    with_projection = [index for index, block in enumerate(model.plan.flow_blocks)
                       if any(k.startswith(f"{block.module_name}.shortcut.") for k in keys)]
    residuals = list(zip(anonymous["conv"], anonymous["bn"], strict=False))
    if len(anonymous["conv"]) != len(anonymous["bn"]) or len(residuals) != len(with_projection):
        problems.append(f"structure: the file has {len(anonymous['conv'])} residual convolutions and "
                        f"{len(anonymous['bn'])} of their norms, the model {len(with_projection)} projection shortcuts")
    for (conv, norm), index in zip(residuals, with_projection, strict=False):
        for layer in (conv, norm):
            _add(groups, tensors, ("block", index, "shortcut"), layer)
    return groups, tensors, problems


def _add(groups: dict[UnitKey, list[str]], tensors: StateDict, unit: UnitKey, layer: KerasLayer) -> None:
    for role, array in layer.arrays.items():
        key = f"{layer.name}/{role}"
        tensors[key] = to_torch(layer.kind, role, array)
        groups.setdefault(unit, []).append(key)


def keras_units(model: XceptionNet, path: str | os.PathLike[str]) -> tuple[dict[UnitKey, list[str]], StateDict,
                                                                         list[str]]:
    """The tensors of a Keras Xception file (PyTorch layout), grouped for ``weights.pair_units``,
    and what could not be placed at all."""
    return _units(read_keras(path), model)
