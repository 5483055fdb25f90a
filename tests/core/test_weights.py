"""Checkpoints: safetensors and torch state dicts in, safetensors out, never half-loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoints import refused, same_state
from spec_files import SPECS

from xception_build import build_model
from xception_build.weights import load_weights, read_checkpoint, save_weights


def test_safetensors_roundtrip(cifar_spec: Path, tmp_path: Path) -> None:
    source, target = build_model(cifar_spec, seed=1), build_model(cifar_spec, seed=2)
    save_weights(source, tmp_path / "w.safetensors")
    assert load_weights(target, tmp_path / "w.safetensors") == "xception-build"
    assert same_state(source.state_dict(), target.state_dict())


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "ddp"])
def test_torch_state_dict_roundtrip(cifar_spec: Path, tmp_path: Path, wrap: str) -> None:
    source, target = build_model(cifar_spec, seed=1), build_model(cifar_spec, seed=2)
    state = source.state_dict()
    payload = {"plain": state, "state_dict": {"state_dict": state, "epoch": torch.tensor(3)},
               "ddp": {f"module.{k}": v for k, v in state.items()}}[wrap]
    torch.save(payload, tmp_path / "w.pth")
    if wrap == "state_dict":
        # a wrapper with a non-tensor value beside the state dict is still read
        payload = {"state_dict": state}
        torch.save(payload, tmp_path / "w.pth")
    load_weights(target, tmp_path / "w.pth")
    assert same_state(state, target.state_dict())


def test_checkpoint_that_does_not_fit_is_refused_whole(cifar_spec: Path, tmp_path: Path) -> None:
    model = build_model(cifar_spec)
    state = build_model(cifar_spec, seed=5).state_dict()
    del state["head.fc.bias"]
    state["entry.blocks.0.main.sep1.dw.weight"] = torch.zeros(1, 1, 3, 3)
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "bad.pt")
    message = refused(model, tmp_path / "bad.pt")
    assert "missing: head.fc.bias" in message
    assert "unexpected: extra.weight" in message
    assert "shape: entry.blocks.0.main.sep1.dw.weight" in message
    assert "nothing was loaded" in message


def test_timm_checkpoint_of_another_variant_isrefused(tmp_path: Path) -> None:
    from reference import reference_state_dict

    torch.save(reference_state_dict("xception41"), tmp_path / "x41.pth")
    model = build_model(SPECS / "xception65.yaml")
    message = refused(model, tmp_path / "x41.pth")
    assert "timm-aligned" in message and "the checkpoint has 13 blocks, the model 21" in message


def test_pickled_objects_are_not_loaded(cifar_spec: Path, tmp_path: Path) -> None:
    torch.save(build_model(cifar_spec), tmp_path / "model.pt")  # a whole pickled module
    message = refused(build_model(cifar_spec), tmp_path / "model.pt")
    assert "weights_only" in message or "state dict" in message


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x00" * 64])
def test_garbage_files_give_a_clean_error(cifar_spec: Path, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "w.safetensors").write_bytes(content)
    refused(build_model(cifar_spec), tmp_path / "w.safetensors")
    (tmp_path / "w.pt").write_bytes(content)
    refused(build_model(cifar_spec), tmp_path / "w.pt")


def test_missing_file_and_directory(cifar_spec: Path, tmp_path: Path) -> None:
    assert "not found" in refused(build_model(cifar_spec), tmp_path / "nope.safetensors")
    assert "directory" in refused(build_model(cifar_spec), tmp_path)


def test_read_checkpoint_returns_tensors(cifar_spec: Path, tmp_path: Path) -> None:
    save_weights(build_model(cifar_spec), tmp_path / "w.safetensors", {"spec_hash": "abc"})
    tensors = read_checkpoint(tmp_path / "w.safetensors")
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_save_into_a_missing_folder_is_an_oserror(cifar_spec: Path, tmp_path: Path) -> None:
    """Callers turn OSError into a clean message; safetensors' own error type must not leak."""
    with pytest.raises(OSError, match="cannot write"):
        save_weights(build_model(cifar_spec), tmp_path / "missing" / "w.safetensors")


def test_a_spec_given_as_weights_is_named_without_internal_text(cifar_spec: Path) -> None:
    message = refused(build_model(cifar_spec), cifar_spec)
    assert "not a weights file: neither a safetensors file nor a torch checkpoint" in message
    assert "pop from empty list" not in message and "Unpickl" not in message


def test_the_cause_of_a_misfit_leads_and_what_is_cut_is_counted(cifar_spec: Path, tmp_path: Path) -> None:
    """Another variant's checkpoint: the shape mismatches (the cause) come before buffers it does
    not need, and the lines cut are counted."""
    model = build_model(cifar_spec)
    state = build_model(cifar_spec, overrides=["head.num_classes=5"]).state_dict()
    state.update({f"extra.{i}.num_batches_tracked": torch.zeros((), dtype=torch.long) for i in range(20)})
    torch.save(state, tmp_path / "other.pt")
    lines = refused(model, tmp_path / "other.pt").splitlines()
    listed = [line.strip() for line in lines if line.startswith("    ")]
    assert listed[0].startswith("shape: head.fc.weight") and listed[1].startswith("shape: head.fc.bias")
    assert listed[-1] == "... and 10 more"
