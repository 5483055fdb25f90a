"""Training data (xception_build.datasets): CIFAR-10 batches, image folders and the synthetic task.

The CIFAR-10 tests write small pickles in the real format, so the restricted unpickler is checked
on the files it must read and on one that tries to run code.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xception_build.datasets import ImageFolder, UInt8Images, load_cifar10, synthetic_dataset
from xception_build.errors import UserError


def _write_cifar(folder: Path, n: int = 4) -> np.ndarray:
    folder.mkdir(parents=True)
    data = np.arange(n * 3072, dtype=np.int64).astype(np.uint8).reshape(n, 3072)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"x", b"labels": list(range(n)), b"data": data, b"filenames": [b"a"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return data


def test_cifar_batches_load_through_the_restricted_unpickler(tmp_path: Path) -> None:
    data = _write_cifar(tmp_path / "cifar-10-batches-py")
    images, labels = load_cifar10(tmp_path, train=True)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == list(range(4)) * 5
    assert torch.equal(images[0].flatten(), torch.from_numpy(data[0]))
    test_images, _ = load_cifar10(tmp_path / "cifar-10-batches-py", train=False)
    assert test_images.shape == (4, 3, 32, 32)
    norm = ((0.5,) * 3, (0.25,) * 3)
    x, y = UInt8Images(images, labels, (3, 64, 64), norm)[1]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and int(y) == 1


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_cifar_loader_refuses_pickles_that_call_anything_else(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    with pytest.raises(UserError, match="refusing to unpickle .*print"):
        load_cifar10(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_missing_cifar_batches_name_the_files_and_the_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data_batch_1.*test_batch|data_batch_1") as info:
        load_cifar10(tmp_path)
    assert "cs.toronto.edu" in (info.value.hint or "")


def test_image_folder_without_pillow_is_a_clear_user_error(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(UserError, match="needs Pillow"):
        ImageFolder(tmp_path, (3, 32, 32), ((0.5,) * 3, (0.5,) * 3))


def test_image_folder_reads_classes_with_pillow(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        image_module.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / cls / "a.png")
    data = ImageFolder(tmp_path, (3, 32, 32), ((0.5,) * 3, (0.5,) * 3), train=True)
    assert data.classes == ["cat", "dog"] and len(data) == 2
    x, y = data[1]
    assert x.shape == (3, 32, 32) and int(y) == 1


def test_synthetic_data_is_deterministic_and_labelled() -> None:
    a, b = synthetic_dataset(8, (3, 16, 16), 5, seed=3), synthetic_dataset(8, (3, 16, 16), 5, seed=3)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert a.tensors[1].max() < 5


def test_cifar_batches_with_text_keys_load_too(tmp_path: Path) -> None:
    """CIFAR-10 files were written by Python 2 (bytes keys); a batch re-saved by Python 3 has text keys."""
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [3]},
                                                       protocol=2))
    images, labels = load_cifar10(tmp_path, train=False)
    assert labels.tolist() == [3] and images.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("payload", [
    [1, 2, 3],  # not a dict
    {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": 7},  # labels not a list
    {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1]},  # fewer labels than images
    {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]},  # wrong row size
], ids=["list", "scalar-labels", "short-labels", "short-rows"])
def test_malformed_cifar_batches_are_user_errors(tmp_path: Path, payload: object) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    (folder / "data_batch_2").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UserError, match="data_batch_2: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)


def test_image_datasets_need_an_rgb_spec(tmp_path: Path) -> None:
    images, labels = torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(UserError, match="RGB, but the spec's input has 1 channels"):
        UInt8Images(images, labels, (1, 32, 32), ((0.5,), (0.5,)))  # type: ignore[arg-type]
