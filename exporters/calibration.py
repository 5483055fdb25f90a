"""The images of an int8 export: calibration images, and held-out images to verify it on.

``--calib DATA`` takes every data form ``examples/train.py`` reads (CIFAR-10 batches, ``train/``
with ``val/``, one image folder with 10 % held out: :func:`xception_build.datasets.open_data`),
preprocessed exactly as the spec's ``input`` section says (resize by ``crop_pct`` with its
interpolation, centre crop, mean and std), without training augmentation. Calibration images come
from the training split, the held-out images from the validation split: never the same images.
``--calib synthetic`` (class templates plus noise) only when asked for: a model trained on real
images says little on them, so its agreement figures mean little, and it has no labels to judge;
its verdict is "not judged" (exit 4) unless ``--judge-synthetic`` asks for its agreement to be.

What was used is recorded in the manifest (:class:`DataSource`), so ``xbuild verify`` reads the
same held-out images again and re-checks the int8 artifact on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xception_build.errors import UserError

if TYPE_CHECKING:  # torch only where images are read: the CLI imports this module for its defaults
    import torch

    from xception_build.spec import Spec

SYNTHETIC = "synthetic"
DEFAULT_CALIBRATION_IMAGES = 256
DEFAULT_EVALUATION_IMAGES = 500
SYNTHETIC_WARNING = ("warning: --calib synthetic: calibrating and checking on synthetic images (class "
                     "templates plus noise); a model trained on real images behaves differently on them, so the "
                     "int8 agreement figures mean little and no accuracy is checked: the verdict is \"not judged\" "
                     "(exit 4) unless --judge-synthetic. Give --calib DATA for a verdict that means something.")


@dataclass(frozen=True)
class DataSource:
    """Where an int8 export's images come from, as the manifest records it."""

    data: str  # a folder, or "synthetic"
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    evaluation_images: int = DEFAULT_EVALUATION_IMAGES
    seed: int = 0

    def __post_init__(self) -> None:
        for option, count in (("--calib-size", self.calibration_images), ("--eval-size", self.evaluation_images)):
            if count < 1:
                raise UserError(f"{option} {count}: expected a positive number of images")
        if self.data != SYNTHETIC and not Path(self.data).expanduser().exists():
            raise UserError(f"--calib {self.data}: no such data folder",
                            hint="give a CIFAR-10 folder or an image folder, or --calib synthetic (only when "
                                 "no data exists: its figures mean little)")

    @property
    def synthetic(self) -> bool:
        return self.data == SYNTHETIC


@dataclass
class HeldOut:
    """Preprocessed held-out images (N, C, H, W) and their labels (None: synthetic, no task to judge)."""

    images: np.ndarray
    labels: np.ndarray | None
    description: str
    synthetic: bool = False  # class templates plus noise: their agreement is not judged unless asked

    @property
    def fingerprint(self) -> str:
        """sha256 of the images as fed: tells a re-check whether it judges the same images."""
        return hashlib.sha256(np.ascontiguousarray(self.images, dtype=np.float32).tobytes()).hexdigest()

    def batches(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.images), size):
            yield self.images[start:start + size]


def _take(dataset: torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]], count: int,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of ``dataset`` (all if it has fewer), a seeded choice, in a fixed order."""
    import torch

    length = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:count].tolist()
    images, labels = zip(*(dataset[i] for i in sorted(order)), strict=True)
    return torch.stack(images).numpy().astype(np.float32), torch.stack(labels).numpy().astype(np.int64)


def load_images(source: DataSource, spec: Spec) -> tuple[np.ndarray, HeldOut]:
    """(calibration images, held-out images) for ``spec``'s input, from ``source``."""
    from xception_build.datasets import open_data, synthetic_dataset

    num_classes = spec.head.num_classes
    if source.synthetic:
        total = source.calibration_images + source.evaluation_images
        data = synthetic_dataset(total, spec.input.shape, max(num_classes, 2), seed=source.seed)
        images = data.tensors[0].numpy().astype(np.float32)
        return (images[:source.calibration_images],
                HeldOut(images[source.calibration_images:], None, f"{source.evaluation_images} synthetic images",
                        synthetic=True))
    splits = open_data(Path(source.data), spec.input, num_classes, seed=source.seed, augment=False)
    calibration, _ = _take(splits.train, source.calibration_images, source.seed)
    held_images, held_labels = _take(splits.val, source.evaluation_images, source.seed)
    description = f"{len(held_images)} held-out images of {splits.description}"
    return calibration, HeldOut(held_images, held_labels, description)
