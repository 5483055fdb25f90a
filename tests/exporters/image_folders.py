"""An image folder that no one labelled by hand, and the small spec trained on it: the data of
the int8 tests, made here (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_image_folder(root: Path, train: int = 40, val: int = 20, seed: int = 0, noise: float = 40.0) -> Path:
    """Ten classes a small CNN learns in an epoch: a colour and a stripe direction per class, plus
    noise (of this standard deviation, in 0..255 pixel units: more noise, a less confident model)."""
    image = pytest.importorskip("PIL.Image", reason="Pillow reads image folders")
    rng = np.random.default_rng(seed)
    palette = rng.uniform(0, 255, size=(10, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    for split, count in (("train", train), ("val", val)):
        for k in range(10):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            stripes = ((xx * np.cos(k * 0.6) + yy * np.sin(k * 0.6)) // (3 + k % 4)) % 2
            for i in range(count):
                pixels = palette[k] * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, noise, (32, 32, 3))
                image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root
