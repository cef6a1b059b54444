"""Measurements of the world's signal and nuisance, shared by the tests and `grainproof bench simulate`.

They back the claims in docs/simulation.md: provenance and season separate lots in the latent
traits, yet in raw pixels a change of phone outweighs a move to the next département.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from grainproof.simulate import traits as trait_model
from grainproof.simulate.devices import PHONE_PROFILES, get_phone, sample_lighting
from grainproof.simulate.photos import render_photo
from grainproof.simulate.render import get_tray
from grainproof.simulate.varieties import get_variety

if TYPE_CHECKING:
    from grainproof.geo import RegionSet


@dataclass(frozen=True, slots=True, kw_only=True)
class LatentSeparation:
    """Median distances between places and seasons, in units of the within-place spread (field + lot)."""

    neighbour_median: float
    far_median: float
    season_median: float
    neighbour_pairs: int
    far_pairs: int


def _within_place_sd() -> np.ndarray:
    return trait_model.PROVENANCE_SD * np.hypot(trait_model.FIELD_SHARE, trait_model.LOT_SHARE)


def neighbour_pairs(region_set: RegionSet, regions: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of the given regions that share a border, each pair once."""
    chosen = set(regions)
    return sorted({(a, b) for a in regions for b in region_set.neighbours(a) if b in chosen and a < b})


def latent_separation(
    region_set: RegionSet, regions: Sequence[str], nature: trait_model.Nature, seasons: Sequence[int]
) -> LatentSeparation:
    """How far apart (8-D latent, within-place SD units) neighbours, far départements and seasons are."""
    codes = list(regions)
    points = np.array([region_set.representative_point(code) for code in codes])
    first = seasons[0]
    shift = nature.environment(points[:, 0], points[:, 1], codes, np.full(len(codes), first)) / _within_place_sd()
    index = {code: i for i, code in enumerate(codes)}
    pairs = neighbour_pairs(region_set, codes)
    neighbour = [np.linalg.norm(shift[index[a]] - shift[index[b]]) for a, b in pairs]
    far = [
        np.linalg.norm(shift[i] - shift[j])
        for i, j in itertools.combinations(range(len(codes)), 2)
        if region_set.distance_km(codes[i], codes[j]) >= 300.0
    ]
    season_gaps = [
        np.linalg.norm(
            (
                nature.season_anomaly(a, points[:, 0], points[:, 1])
                - nature.season_anomaly(b, points[:, 0], points[:, 1])
            )
            / _within_place_sd(),
            axis=1,
        )
        for a, b in itertools.combinations(seasons, 2)
    ]
    return LatentSeparation(
        neighbour_median=float(np.median(neighbour)) if neighbour else float("nan"),
        far_median=float(np.median(far)) if far else float("nan"),
        season_median=float(np.median(np.concatenate(season_gaps))) if season_gaps else float("nan"),
        neighbour_pairs=len(neighbour),
        far_pairs=len(far),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PixelNuisance:
    """Mean-colour distances (8-bit levels) of photos: same lot across phones vs neighbours with one phone."""

    phone_median: float
    phone_min: float
    neighbour_median: float
    neighbour_max: float


def phone_vs_neighbour_colour(
    region_set: RegionSet,
    regions: Sequence[str],
    nature: trait_model.Nature,
    *,
    home: str = "51",
    phone: str = "pixel-6a",
    season: int = 2024,
    max_side: int = 160,
) -> PixelNuisance:
    """Render one lot with every phone, and neighbouring départements' lots with one phone; compare mean colours.

    Kernel layout (seed), light and tray are the same in every photo: only the phone or the origin changes.
    """
    variety = get_variety("soft_wheat", "aurelio")
    lighting = sample_lighting(np.random.default_rng(1))
    tray = get_tray("white_plastic")

    def lot_traits(code: str) -> np.ndarray:
        lon, lat = region_set.representative_point(code)
        shift = nature.environment(np.array([lon]), np.array([lat]), [code], np.array([season]))[0]
        return trait_model.traits_from_latent(variety, shift)

    def mean_colour(traits: np.ndarray, phone_name: str) -> np.ndarray:
        pixels = render_photo(
            traits, variety.species, variety.name, get_phone(phone_name), lighting, tray, np.random.default_rng(5),
            max_side=max_side,
        )  # fmt: skip
        return pixels.reshape(-1, 3).astype(float).mean(axis=0)

    home_traits = lot_traits(home)
    by_phone = [mean_colour(home_traits, p.name) for p in PHONE_PROFILES]
    phone_distances = [float(np.linalg.norm(a - b)) for a, b in itertools.combinations(by_phone, 2)]
    neighbour_distances = [
        float(np.linalg.norm(mean_colour(lot_traits(a), phone) - mean_colour(lot_traits(b), phone)))
        for a, b in neighbour_pairs(region_set, regions)
    ]
    return PixelNuisance(
        phone_median=float(np.median(phone_distances)),
        phone_min=min(phone_distances),
        neighbour_median=float(np.median(neighbour_distances)),
        neighbour_max=max(neighbour_distances),
    )
