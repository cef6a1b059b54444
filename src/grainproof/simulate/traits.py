"""Latent lot traits: variety baseline shifted by provenance, département, season, field and lot.

A lot's traits live in an 8-dimensional latent space `z` (log or logit offsets, see LATENT_TRAITS).
"Nature" - the smooth provenance field, the per-département offsets and the per-season anomaly
fields - depends only on `nature_seed`, never on the world seed: two worlds drawn with different
`--seed` share one geography and one weather history, so one can be the reference and the other
the test set. Field and lot effects are drawn per world. Every scale is documented in
docs/simulation.md; they are chosen so that provenance and season are small next to the
differences between varieties, but well above the noise of a lot mean over 3 photos of ~80 kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grainproof.simulate.varieties import Variety

#: Columns of latent_traits.csv, in the order of the latent vector z.
LATENT_TRAITS: tuple[str, ...] = (
    "length_mm",
    "width_mm",
    "lightness",
    "redness",
    "weathering",
    "broken_share",
    "shrivelled_share",
    "impurity_share",
)
N_TRAITS = len(LATENT_TRAITS)

#: Baseline logits of the share-like traits (weathering, broken, shrivelled, impurity): ~12 %, 5 %, 5 %, 3 %.
SHARE_BASE_LOGIT = np.array([-2.0, -3.0, -3.0, -3.5])

#: Standard deviation, per latent dimension, of the smooth provenance field across France.
#: Units: log-multiplier for length, width and lightness; log R/B ratio for redness; logit for shares.
PROVENANCE_SD = np.array([0.030, 0.040, 0.050, 0.040, 0.45, 0.35, 0.45, 0.35])
#: Length scale (km) of the provenance field: neighbouring départements (~80 km apart) are similar.
PROVENANCE_LENGTH_KM = 160.0
#: Per-département offset (local practice, soil), as a share of PROVENANCE_SD.
DEPARTEMENT_SHARE = 0.40
#: Per-season anomaly: a France-wide offset plus a broad smooth field, each with this SD.
SEASON_GLOBAL_SD = np.array([0.015, 0.025, 0.035, 0.025, 0.45, 0.25, 0.40, 0.20])
SEASON_FIELD_SD = np.array([0.015, 0.020, 0.025, 0.020, 0.35, 0.20, 0.30, 0.15])
SEASON_LENGTH_KM = 300.0
#: Field-to-field (within a département) and lot-to-lot (within a field and season) spread, share of PROVENANCE_SD.
FIELD_SHARE = 0.30
LOT_SHARE = 0.15

#: Random Fourier features used to draw the smooth fields (enough for a visually smooth GP sample).
_N_FOURIER = 96
#: Centre of the local equirectangular projection used for distances (metropolitan France).
_LON0, _LAT0 = 2.5, 46.5
_KM_PER_DEG_LAT = 110.57
_KM_PER_DEG_LON = 111.32 * float(np.cos(np.radians(_LAT0)))


def _project_km(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(n, 2) kilometres east/north of the projection centre; accurate enough over France."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    return np.stack([(lon - _LON0) * _KM_PER_DEG_LON, (lat - _LAT0) * _KM_PER_DEG_LAT], axis=1)


@dataclass(frozen=True, slots=True)
class SmoothField:
    """A smooth random function R^2 -> R^d (approximate Gaussian process, RBF kernel) over km coordinates."""

    frequencies: np.ndarray  # (m, 2), per km
    phases: np.ndarray  # (m,)
    weights: np.ndarray  # (m, d)

    @classmethod
    def draw(cls, rng: np.random.Generator, *, length_km: float, dim: int) -> SmoothField:
        frequencies = rng.normal(0.0, 1.0 / length_km, size=(_N_FOURIER, 2))
        phases = rng.uniform(0.0, 2 * np.pi, size=_N_FOURIER)
        weights = rng.normal(0.0, 1.0, size=(_N_FOURIER, dim))
        return cls(frequencies, phases, weights)

    def __call__(self, xy_km: np.ndarray) -> np.ndarray:
        """Unit-variance field values (n, d) at (n, 2) km coordinates."""
        features = np.cos(xy_km @ self.frequencies.T + self.phases)
        return np.sqrt(2.0 / _N_FOURIER) * features @ self.weights


def _code_key(code: str) -> list[int]:
    """A stable integer key for a region code (Python's hash() changes between runs)."""
    return [ord(c) for c in code]


class Nature:
    """The world's fixed environment: provenance field, département offsets and season anomalies."""

    def __init__(self, nature_seed: int) -> None:
        self.nature_seed = nature_seed
        self._provenance = SmoothField.draw(
            np.random.default_rng([nature_seed, 1]), length_km=PROVENANCE_LENGTH_KM, dim=N_TRAITS
        )
        self._seasons: dict[int, tuple[np.ndarray, SmoothField, float]] = {}

    def provenance(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """The smooth geographic shift (n, 8) of the latent traits at these points."""
        return self._provenance(_project_km(lon, lat)) * PROVENANCE_SD

    def departement_offset(self, code: str) -> np.ndarray:
        """The département's own shift (8,): farming practice and soil not captured by the smooth field."""
        rng = np.random.default_rng([self.nature_seed, 2, *_code_key(code)])
        return rng.normal(0.0, 1.0, N_TRAITS) * PROVENANCE_SD * DEPARTEMENT_SHARE

    def _season(self, season: int) -> tuple[np.ndarray, SmoothField, float]:
        if season not in self._seasons:
            rng = np.random.default_rng([self.nature_seed, 3, season])
            offset = rng.normal(0.0, 1.0, N_TRAITS) * SEASON_GLOBAL_SD
            field = SmoothField.draw(rng, length_km=SEASON_LENGTH_KM, dim=N_TRAITS)
            # Early or late harvest of the whole season, in days.
            timing = float(rng.normal(0.0, 6.0))
            self._seasons[season] = (offset, field, timing)
        return self._seasons[season]

    def season_anomaly(self, season: int, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """The season's weather shift (n, 8) at these points: a national offset plus a broad regional field."""
        offset, field, _ = self._season(season)
        return offset + field(_project_km(lon, lat)) * SEASON_FIELD_SD

    def season_timing_days(self, season: int) -> float:
        """How many days later (positive) or earlier than usual the season's harvest came."""
        return self._season(season)[2]

    def environment(self, lon: np.ndarray, lat: np.ndarray, codes: list[str], seasons: np.ndarray) -> np.ndarray:
        """Total environmental shift (n, 8): provenance field + département offset + season anomaly."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        shift = self.provenance(lon, lat)
        shift += np.array([self.departement_offset(code) for code in codes]).reshape(len(codes), N_TRAITS)
        seasons = np.asarray(seasons)
        for season in np.unique(seasons):
            rows = seasons == season
            shift[rows] += self.season_anomaly(int(season), lon[rows], lat[rows])
        return shift


def field_effects(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random field-to-field shifts (n, 8) within a département."""
    return rng.normal(0.0, 1.0, (n, N_TRAITS)) * PROVENANCE_SD * FIELD_SHARE


def lot_effects(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random lot-to-lot shifts (n, 8) within one field and season."""
    return rng.normal(0.0, 1.0, (n, N_TRAITS)) * PROVENANCE_SD * LOT_SHARE


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def traits_from_latent(variety: Variety, z: np.ndarray) -> np.ndarray:
    """Observable lot-mean traits (8,) in LATENT_TRAITS order from a variety and a latent shift z (8,)."""
    z = np.asarray(z, dtype=np.float64)
    return np.array(
        [
            variety.length_mm * np.exp(z[0]),
            variety.width_mm * np.exp(z[1]),
            np.exp(z[2]),
            z[3],
            *_sigmoid(SHARE_BASE_LOGIT + z[4:8]),
        ]
    )


def harvest_day_of_year(
    species: np.ndarray, lat: np.ndarray, timing_days: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Harvest day of year: barley ~2 weeks before wheat, ~2.5 days later per degree north, season timing, noise."""
    base = np.where(np.asarray(species) == "barley", 186.0, 200.0)
    lat = np.asarray(lat, dtype=np.float64)
    days = base + 2.5 * (lat - _LAT0) + np.asarray(timing_days) + rng.normal(0.0, 4.0, lat.shape)
    return np.clip(np.round(days), 165, 235).astype(int)
