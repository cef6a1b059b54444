"""Synthetic tray photos shared by the embedding tests (unit and integration)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from grainproof.simulate.devices import Lighting, capture, encode_jpeg, get_phone
from grainproof.simulate.render import card_placement, draw_kernels, get_tray, lot_kernels, place_card, render_tray
from grainproof.simulate.varieties import get_variety

#: Two intakes' lights: a warm, dim bulb with vignetting, and bright daylight from the other side.
LIGHTS = {
    "warm-dim": Lighting(
        temperature_k=2900,
        intensity=0.6,
        vignetting=0.3,
        shadow_strength=0.0,
        shadow_angle=0.0,
        light_direction=(0.3, 0.2, 0.93),
    ),
    "daylight": Lighting(
        temperature_k=6200,
        intensity=1.4,
        vignetting=0.05,
        shadow_strength=0.0,
        shadow_angle=1.0,
        light_direction=(-0.4, 0.1, 0.9),
    ),
}
#: A soft-wheat lot's traits (LATENT_TRAITS order: length, width, lightness, redness, weathering, broken,
#: shrivelled, impurity).
WHEAT_TRAITS = np.array([6.8, 3.6, 1.0, 0.0, 0.12, 0.06, 0.05, 0.03])
#: A 1024 x 768 photo of 125 mm of tray: a mid-range phone at the protocol's framing.
PHOTO_PX_PER_MM = 1024 / 125.0


def simulated_lot_photo(
    *,
    tray: str,
    light: str | Lighting,
    traits: np.ndarray = WHEAT_TRAITS,
    kernels_seed: int = 11,
    card_texture: np.ndarray | None = None,
    phone: str = "galaxy-s21",
) -> bytes:
    """A JPEG of 70 kernels of one lot (the same kernels in the same places for a seed) on a tray, under one of
    LIGHTS (or a Lighting), photographed by one phone (a simulated profile's name); the card lies on the tray
    when its printed texture is given."""
    lighting = LIGHTS[light] if isinstance(light, str) else light
    kernels = lot_kernels(traits, get_variety("soft_wheat", "aurelio"), 70, np.random.default_rng(kernels_seed))
    rng = np.random.default_rng(5)
    canvas = render_tray(get_tray(tray), 768, 1024, PHOTO_PX_PER_MM, rng)
    if card_texture is not None:
        place_card(canvas, PHOTO_PX_PER_MM, card_placement(rng), texture=card_texture)
    draw_kernels(canvas, kernels, PHOTO_PX_PER_MM, lighting.light_direction, rng)
    profile = get_phone(phone)
    return encode_jpeg(capture(canvas, profile, lighting, rng), profile)


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
