"""Photographing one lot: a few photos of freshly spread kernels, one phone, one lighting session.

`photograph_lot` is what a worker process runs; it needs only numpy and PIL (no geography), and
all its randomness comes from the lot's own seed, so the photos are the same whatever the number
of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grainproof.simulate.devices import Lighting, PhoneProfile, capture, encode_jpeg, get_phone, jitter_lighting
from grainproof.simulate.render import (
    Tray,
    card_placement,
    draw_kernels,
    get_tray,
    lot_kernels,
    place_card,
    render_tray,
)
from grainproof.simulate.varieties import get_variety

#: Width of the tray area a phone at zoom 1 sees, in mm (4:3 frame).
FIELD_OF_VIEW_MM = 125.0
#: Kernels on the tray per photo.
MIN_KERNELS, MAX_KERNELS = 40, 120


def photo_size(phone: PhoneProfile, max_side: int | None) -> tuple[int, int]:
    """(height, width) of the saved photo in its upright orientation, 4:3, capped at max_side."""
    long_side = min(phone.long_side, max_side) if max_side else phone.long_side
    return round(long_side * 3 / 4), long_side


def render_photo(
    traits: np.ndarray,
    species: str,
    variety: str,
    phone: PhoneProfile,
    lighting: Lighting,
    tray: Tray,
    rng: np.random.Generator,
    *,
    n_kernels: int = 80,
    max_side: int | None = None,
    admixture_traits: np.ndarray | None = None,
    admixture_share: float = 0.0,
    admixture_variety: str | None = None,
    with_card: bool = True,
) -> np.ndarray:
    """Upright 8-bit pixels (h, w, 3) of one photo of a lot with these lot-mean traits.

    The calibration card lies on the tray unless `with_card` is False (an intake that skips the protocol).
    """
    height, width = photo_size(phone, max_side)
    zoom = phone.zoom * float(np.exp(rng.normal(0.0, 0.05)))  # the operator holds the phone a bit higher or lower
    px_per_mm = width / (FIELD_OF_VIEW_MM / zoom)
    kernels = lot_kernels(
        traits,
        get_variety(species, variety),
        n_kernels,
        rng,
        admixture_traits=admixture_traits,
        admixture_share=admixture_share,
        admixture_variety=get_variety(species, admixture_variety) if admixture_variety else None,
    )
    canvas = render_tray(tray, height, width, px_per_mm, rng)
    placement = card_placement(rng)  # drawn either way: without the card, the same photo less the card
    if with_card:
        place_card(canvas, px_per_mm, placement)
    draw_kernels(canvas, kernels, px_per_mm, lighting.light_direction, rng)
    return capture(canvas, phone, lighting, rng)


@dataclass(frozen=True, slots=True, kw_only=True)
class LotPhotoJob:
    """Everything a worker needs to photograph one lot and write its JPEGs (picklable)."""

    seed: int
    lot_index: int
    species: str
    variety: str
    traits: tuple[float, ...]
    phone: str
    tray: str
    lighting: Lighting
    n_kernels: int
    paths: tuple[Path, ...]
    max_side: int | None = None
    admixture_traits: tuple[float, ...] | None = None
    admixture_share: float = 0.0
    #: The admixed kernels' variety (same species); None: the lot's own variety, grown elsewhere.
    admixture_variety: str | None = None
    with_card: bool = True


def lot_rng(seed: int, lot_index: int) -> np.random.Generator:
    """The random stream of one lot's photos, keyed by (world seed, lot index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0x9E37, lot_index]))


def photograph_lot(job: LotPhotoJob) -> int:
    """Render and write the lot's photos; returns the number written."""
    rng = lot_rng(job.seed, job.lot_index)
    phone = get_phone(job.phone)
    tray = get_tray(job.tray)
    traits = np.asarray(job.traits)
    admixture = None if job.admixture_traits is None else np.asarray(job.admixture_traits)
    for path in job.paths:
        n_kernels = int(np.clip(round(job.n_kernels * np.exp(rng.normal(0, 0.08))), MIN_KERNELS, MAX_KERNELS))
        pixels = render_photo(
            traits,
            job.species,
            job.variety,
            phone,
            jitter_lighting(job.lighting, rng),
            tray,
            rng,
            n_kernels=n_kernels,
            max_side=job.max_side,
            admixture_traits=admixture,
            admixture_share=job.admixture_share,
            admixture_variety=job.admixture_variety,
            with_card=job.with_card,
        )
        path.write_bytes(encode_jpeg(pixels, phone))
    return len(job.paths)
