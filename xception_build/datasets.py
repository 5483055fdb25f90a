"""Training data: three ``torch.utils.data.Dataset`` forms of normalised CHW float images.

Synthetic (a learnable task made of class templates plus noise), an image folder read with Pillow,
and the CIFAR-10 python batches already on disk (read with a restricted unpickler, see
:func:`load_cifar10`). torchvision is deliberately not used: it pins torch versions.
Separate from :mod:`xception_build.training` because the step and loop take any iterable of
``(images, labels)`` batches; only ``examples/train.py`` needs to know where images come from.

Training augmentation (random crop, flip) draws from a generator seeded by (seed, epoch, image
index), never from the process's global RNG. So an image is augmented the same way whichever
data-loader worker or rank reads it, however many there are, and a resumed run sees exactly the
augmentations the uninterrupted one would have; ``set_epoch`` (called by the training loop, as
for ``DistributedSampler``) moves to the next epoch's draws.
"""

from __future__ import annotations

import copy
import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from xception_build.errors import UserError

if TYPE_CHECKING:
    from xception_build.spec import InputSpec

#: (mean, std) per RGB channel, as in a model's ``pretrained_cfg``
Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]


class DataError(UserError):
    """A training file that cannot be read: one line naming it, exit code 2.

    Raised inside DataLoader workers, where PyTorch re-raises it in the main process as
    ``DataError(text)``, the text being the worker's whole formatted traceback; the constructor
    keeps only the original message (and hint) from that text, so the user still sees one line.
    """

    def __init__(self, message: str, **kwargs: object) -> None:
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught ") and marker in message:
            message, _, hint = message.rsplit(marker, 1)[1].partition("\n  hint: ")
            message = message.strip()
            if hint.strip() and "hint" not in kwargs:
                kwargs["hint"] = hint.strip()
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


def _augmentation_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator for one image's augmentation, the same for the same (seed, epoch, index)."""
    mixed = ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


class _EpochSeeded:
    """``set_epoch`` and the per-image generator shared by the augmenting datasets."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator:
        return _augmentation_generator(self.seed, self.epoch, index)


def _channel_stats(norm: Normalisation) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std shaped 3×1×1, to broadcast over a CHW image (image files and CIFAR are RGB)."""
    if len(norm[0]) != 3 or len(norm[1]) != 3:
        raise UserError(f"image datasets are RGB, but the spec's input has {len(norm[0])} channels",
                        hint="train it on synthetic data (no --data), or set input.channels=3")
    return torch.tensor(norm[0]).view(3, 1, 1), torch.tensor(norm[1]).view(3, 1, 1)


def synthetic_dataset(num_images: int, input_size: tuple[int, int, int], num_classes: int, *,
                      seed: int = 0, noise: float = 0.5) -> torch.utils.data.TensorDataset:
    """A task a CNN can learn in a few steps: a smooth random template per class plus Gaussian noise.

    Pure noise with random labels cannot be learned, so a loss that falls on it would prove
    nothing; templates make "the loss falls" a real check of forward, backward and the optimizer.
    """
    gen = torch.Generator().manual_seed(seed)
    channels, height, width = input_size
    coarse = torch.randn(num_classes, channels, 4, 4, generator=gen)
    templates = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    labels = torch.randint(num_classes, (num_images,), generator=gen)
    images = templates[labels] + noise * torch.randn(num_images, channels, height, width, generator=gen)
    return torch.utils.data.TensorDataset(images, labels)


class ImageFolder(_EpochSeeded, torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``root/<class>/<image>`` read with Pillow: resize, centre crop (random crop + flip to train)."""

    EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")

    def __init__(self, root: str | Path, input_size: tuple[int, int, int], norm: Normalisation, *,
                 crop_pct: float = 0.875, train: bool = False, seed: int = 0, interpolation: str = "bicubic") -> None:
        try:
            import PIL.Image
        except ImportError as exc:
            raise UserError("reading an image folder needs Pillow, which is not installed",
                            hint="pip install pillow (or use CIFAR-10 batches / synthetic data)") from exc
        self._image = PIL.Image
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"image folder {str(self.root)!r} does not exist or is not a directory")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.samples = [(f, i) for i, c in enumerate(self.classes) for f in sorted((self.root / c).rglob("*"))
                        if f.suffix.lower() in self.EXTENSIONS]
        if not self.samples:
            raise UserError(f"no images in {str(self.root)!r}; expected {self.root}/<class>/<image>"
                            f" with one of {', '.join(self.EXTENSIONS)}")
        height, width = input_size[1:]
        self.size = (height, width)
        self.resize = (round(height / crop_pct), round(width / crop_pct))
        self.mean, self.std = _channel_stats(norm)
        self.train, self.seed = train, seed
        self.resample = {"bicubic": PIL.Image.Resampling.BICUBIC, "bilinear": PIL.Image.Resampling.BILINEAR,
                         "nearest": PIL.Image.Resampling.NEAREST}[interpolation]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np

        path, label = self.samples[index]
        try:
            with self._image.open(path) as img:
                rgb = img.convert("RGB").resize(self.resize[::-1], self.resample)
        except (OSError, ValueError, self._image.DecompressionBombError) as exc:
            raise DataError(f"{path}: cannot read the image ({exc})",
                            hint="remove or replace the file; every file with an image extension is read") from exc
        x = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
        (h, w), (rh, rw) = self.size, self.resize
        top, left, flip = (rh - h) // 2, (rw - w) // 2, False
        if self.train:
            gen = self._generator(index)
            top = int(torch.randint(rh - h + 1, (), generator=gen))
            left = int(torch.randint(rw - w + 1, (), generator=gen))
            flip = bool(torch.rand((), generator=gen) < 0.5)
        x = x[:, top:top + h, left:left + w]
        if flip:
            x = x.flip(2)
        return (x.float() / 255 - self.mean) / self.std, torch.tensor(label)


class UInt8Images(_EpochSeeded, torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """uint8 NCHW images held in memory, normalised (and resized to the model's input) on access."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, input_size: tuple[int, int, int],
                 norm: Normalisation, *, train: bool = False, seed: int = 0, interpolation: str = "bilinear") -> None:
        self.images, self.labels, self.size, self.train = images, labels, tuple(input_size[1:]), train
        self.seed, self.interpolation = seed, interpolation
        self.mean, self.std = _channel_stats(norm)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float() / 255
        if self.train and bool(torch.rand((), generator=self._generator(index)) < 0.5):
            x = x.flip(2)
        if tuple(x.shape[1:]) != self.size:
            align = None if self.interpolation == "nearest" else False
            x = nn.functional.interpolate(x[None], size=self.size, mode=self.interpolation, align_corners=align)[0]
        return (x - self.mean) / self.std, self.labels[index]


@dataclass
class DataSplits:
    """A data folder as training and held-out validation sets, preprocessed as a spec's ``input`` says."""

    train: torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]
    val: torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]
    description: str
    decodes_files: bool  # image files decoded per item (worth loader workers), not tensors in memory


#: the validation folder names of an image-folder dataset, in the order they are looked for
VALIDATION_FOLDERS = ("val", "validation", "test")


def is_cifar10(root: Path) -> bool:
    return (root / "cifar-10-batches-py").is_dir() or (root / "data_batch_1").is_file()


def open_data(root: str | Path, spec_input: InputSpec, num_classes: int, *, seed: int = 0,
              augment: bool = True) -> DataSplits:
    """Every data form the project reads: CIFAR-10 batches; ``root/train`` with ``root/val`` (or
    ``validation``, ``test``); or one folder of ``<class>/<image>`` with 10 % held out, chosen by
    ``seed`` (so training and a later int8 calibration hold out the same images).

    Images are resized (``size / crop_pct``, with the spec's interpolation), centre-cropped and
    normalised with the spec's mean and std; ``augment`` adds random crops and flips to the
    training set only.
    """
    root = Path(root).expanduser()
    size = spec_input.shape
    norm: Normalisation = (tuple(spec_input.mean), tuple(spec_input.std))  # type: ignore[assignment]
    if is_cifar10(root):
        if num_classes != 10:
            raise UserError(f"CIFAR-10 has 10 classes, the spec's head has {num_classes}",
                            hint="add --set head.num_classes=10")
        mode = spec_input.interpolation
        train = UInt8Images(*load_cifar10(root, train=True), size, norm, train=augment, seed=seed, interpolation=mode)
        val = UInt8Images(*load_cifar10(root, train=False), size, norm, interpolation=mode)
        return DataSplits(train, val, "CIFAR-10", decodes_files=False)
    if not root.is_dir():
        raise UserError(f"data folder {str(root)!r} does not exist or is not a directory",
                        hint="give a CIFAR-10 folder (cifar-10-batches-py) or an image folder (<class>/<image>)")
    crop, mode = spec_input.crop_pct, spec_input.interpolation
    split = (root / "train").is_dir()
    whole = ImageFolder(root / "train" if split else root, size, norm, train=augment, seed=seed, crop_pct=crop,
                        interpolation=mode)
    val_dir = next((root / d for d in VALIDATION_FOLDERS if (root / d).is_dir()), None)
    classes = len(whole.classes)
    if classes > num_classes:
        raise UserError(f"{root} has {classes} classes, the spec's head has {num_classes} outputs",
                        hint=f"add --set head.num_classes={classes}")
    if split and val_dir is not None:
        return DataSplits(whole, ImageFolder(val_dir, size, norm, crop_pct=crop, interpolation=mode),
                          f"image folder {root} ({classes} classes)", decodes_files=True)
    order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed)).tolist()
    count = max(1, len(whole) // 10)
    unaugmented = copy.copy(whole)  # the same files, listed once; read without augmentation
    unaugmented.train = False
    held_out = torch.utils.data.Subset(unaugmented, order[:count])
    return DataSplits(torch.utils.data.Subset(whole, order[count:]), held_out,
                      f"image folder {root} ({classes} classes, {count} held out)", decodes_files=True)


def load_cifar10(root: str | Path, *, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The CIFAR-10 python batches (``cifar-10-batches-py``) as uint8 N×3×32×32 images and labels.

    The batches are Python pickles, and unpickling runs whatever callables a file names, so a
    tampered download could execute code. :class:`_CifarUnpickler` resolves only the few names a
    numpy array needs (and refuses everything else), which keeps the standard files readable and
    a malicious one inert.
    """
    import numpy as np

    folder = Path(root)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 batches missing in {str(folder)!r}: {', '.join(missing)}",
                        hint="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"
                             " and unpack it; this project does not download data")
    images, labels = [], []
    for name in names:
        path = folder / name
        not_cifar = f"{path}: not a CIFAR-10 python batch (expected a dict with data N×3072 and N labels)"
        try:
            with open(path, "rb") as fh:
                batch = _CifarUnpickler(fh, encoding="bytes").load()
        except UserError:
            raise
        except OSError as exc:
            raise UserError(f"{path}: cannot read the file: {exc.strerror}") from exc
        except Exception as exc:  # unpickling garbage raises anything from EOFError to ValueError
            raise UserError(f"{not_cifar} ({type(exc).__name__})") from exc
        if not isinstance(batch, dict):
            raise UserError(not_cifar)
        data, targets = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
            raise UserError(not_cifar)
        if not isinstance(targets, (list, tuple)):
            raise UserError(not_cifar)
        try:
            label_tensor = torch.as_tensor(list(targets), dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError) as exc:  # labels that are not integers
            raise UserError(not_cifar) from exc
        if label_tensor.ndim != 1 or len(label_tensor) != len(data):
            raise UserError(not_cifar)
        images.append(torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).view(-1, 3, 32, 32))
        labels.append(label_tensor)
    return torch.cat(images), torch.cat(labels)


@functools.cache  # built once, on first use: numpy is imported lazily
def _allowed_pickle_globals() -> dict[tuple[str, str], object]:
    import codecs

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction and ``_codecs.encode`` (for bytes)."""

    def find_class(self, module: str, name: str) -> object:
        allowed = _allowed_pickle_globals()
        if (module, name) not in allowed:
            raise UserError(f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only numpy arrays")
        return allowed[(module, name)]
