"""A small Gaussian reference world with known cell means, for property tests and `grainproof bench scoring`.

Lot vectors are variety + origin + season effects (+ a phone offset) + Gaussian noise, so the
model's assumptions hold exactly and the p-values' validity can be checked against a known truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from grainproof.domain import Claim, LotRecord, Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class GaussianWorld:
    """Known effects of a synthetic world; `lots` draws genuine lots from it."""

    species: str
    varieties: tuple[str, ...]
    origins: tuple[str, ...]
    seasons: tuple[int, ...]
    variety_means: np.ndarray  # (V, d)
    origin_effects: np.ndarray  # (O, d)
    season_effects: np.ndarray  # (S, d)
    noise: float
    device_effects: np.ndarray  # (devices, d)

    @property
    def dim(self) -> int:
        return int(self.variety_means.shape[1])

    def cell_mean(self, variety: int, origin: int, season: int) -> np.ndarray:
        return self.variety_means[variety] + self.origin_effects[origin] + self.season_effects[season]

    def lots(
        self, n: int, *, seed: int, prefix: str = "lot", origins: tuple[int, ...] | None = None
    ) -> list[LotRecord]:
        """n genuine lots, cells drawn uniformly (from `origins` only when given)."""
        rng = np.random.default_rng(seed)
        pool = origins if origins is not None else tuple(range(len(self.origins)))
        out = []
        for i in range(n):
            v = int(rng.integers(len(self.varieties)))
            o = int(pool[int(rng.integers(len(pool)))])
            s = int(rng.integers(len(self.seasons)))
            device = int(rng.integers(len(self.device_effects)))
            vector = self.cell_mean(v, o, s) + self.device_effects[device] + rng.normal(0, self.noise, self.dim)
            out.append(
                LotRecord(
                    claim=Claim(
                        lot_id=f"{prefix}{i:05d}",
                        species=self.species,
                        variety=self.varieties[v],
                        origin=Origin(region=self.origins[o], lon=round(o * 1.5, 6), lat=47.0),
                        harvest_date=date(self.seasons[s], 7, 15),
                    ),
                    device=f"phone{device}",
                    features=tuple(float(x) for x in vector),
                )
            )
        return out


def gaussian_world(
    *,
    dim: int = 12,
    varieties: int = 2,
    origins: int = 6,
    seasons: int = 3,
    origin_scale: float = 1.0,
    season_scale: float = 0.7,
    noise: float = 1.0,
    devices: int = 1,
    device_scale: float = 0.0,
    seed: int = 0,
) -> GaussianWorld:
    """A world whose cells differ by `origin_scale` / `season_scale` per coordinate, in units of the noise.

    Origin o lies at (1.5 * o, 47.0) degrees, so origins are about 110 km apart along a line.
    """
    rng = np.random.default_rng(seed)
    return GaussianWorld(
        species="soft_wheat",
        varieties=tuple(f"variety{v}" for v in range(varieties)),
        origins=tuple(f"R{o:02d}" for o in range(origins)),
        seasons=tuple(2023 + s for s in range(seasons)),
        variety_means=rng.normal(0, 3.0, (varieties, dim)),
        origin_effects=rng.normal(0, origin_scale, (origins, dim)),
        season_effects=rng.normal(0, season_scale, (seasons, dim)),
        noise=noise,
        # Phones shift lots along a few shared directions (colour cast, sharpness), as real ones do.
        device_effects=rng.normal(0, device_scale, (devices, 2)) @ rng.normal(0, 1, (2, dim)),
    )
