"""Synthetic tray photos shared by the embedding tests (unit and integration)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from grainproof.simulate.render import card_placement, place_card


def tray_photo(
    *,
    width: int = 960,
    height: int = 720,
    seed: int = 0,
    tray=(0.8, 0.8, 0.78),
    gains=(1.0, 1.0, 1.0),
    card: bool = True,
) -> np.ndarray:
    """A synthetic tray: a light background with 60 brownish elliptical kernels, under a light of given gains.

    With `card`, the calibration card lies along the top (as the intake protocol asks) and the kernels below it.
    """
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = np.asarray(tray, dtype=np.float32)
    if card:
        place_card(image, width / 125.0, card_placement(rng))
    first_row = 0.42 if card else 0.15
    for _ in range(60):
        cx, cy = rng.uniform(0.15 * width, 0.85 * width), rng.uniform(first_row * height, 0.85 * height)
        angle = rng.uniform(0, np.pi)
        top, left = int(cy) - 23, int(cx) - 23
        yy, xx = np.mgrid[top : top + 47, left : left + 47]
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        inside = (u / 22.0) ** 2 + (v / 11.0) ** 2 <= 1.0
        patch = image[top : top + 47, left : left + 47]
        patch[inside] = np.asarray([0.62, 0.42, 0.22]) * rng.uniform(0.9, 1.1)
    return np.clip(image * np.asarray(gains, dtype=np.float32), 0, 1)


def jpeg_bytes(pixels: np.ndarray, *, quality: int = 92, exif: Image.Exif | None = None) -> bytes:
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, exif=exif or Image.Exif())
    return buffer.getvalue()
