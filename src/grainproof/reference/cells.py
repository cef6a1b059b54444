"""Reference cells (variety, origin unit, season): an additive hierarchical mean and a pooled covariance.

A cell's mean is variety + origin + season + origin x season + variety x origin effects. Every
effect but the variety's is shrunk toward its prior (zero, or for origins the mean of their
spatial neighbours) in proportion to how little evidence it has, so a cell with one lot, or none
when its origin and season are each seen elsewhere, still has a mean, with a wider uncertainty.
Everything is fitted from sufficient statistics (counts, sums, one scatter matrix), which is what
makes incremental updates and cross-conformal folds cheap: a fold's model is the total minus the fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

#: The additive terms, in backfitting order.
TERMS: tuple[str, ...] = ("variety", "origin", "season", "origin_season", "variety_origin")
#: Backfitting sweeps; the fit is linear, so this converges quickly.
_SWEEPS = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class CellStatistics:
    """Sufficient statistics of the reference lots of one species in its reduced space.

    Cells are indexed c = 0..C-1 with their (variety, origin, season) indices in cell_keys (C, 3).
    """

    sizes: tuple[int, int, int]  # (varieties, origins, seasons)
    cell_keys: np.ndarray  # (C, 3) int
    counts: np.ndarray  # (C,)
    sums: np.ndarray  # (C, k)
    scatter: np.ndarray  # (k, k): sum of z z^T over all lots

    @property
    def total(self) -> int:
        return round(float(self.counts.sum()))


def oas_shrink(covariance: np.ndarray, n_samples: float) -> np.ndarray:
    """Oracle Approximating Shrinkage toward a scaled identity (Chen et al. 2010), from a covariance alone."""
    k = covariance.shape[0]
    mu = float(np.trace(covariance)) / k
    alpha = float(np.mean(covariance**2))
    num = alpha + mu**2
    den = (n_samples + 1.0) * (alpha - mu**2 / k)
    shrinkage = 1.0 if den <= 0 else min(num / den, 1.0)
    return (1.0 - shrinkage) * covariance + shrinkage * mu * np.eye(k)


def _term_keys(keys: np.ndarray, sizes: tuple[int, int, int]) -> dict[str, tuple[np.ndarray, int]]:
    v, o, s = keys[:, 0], keys[:, 1], keys[:, 2]
    n_v, n_o, n_s = sizes
    return {
        "variety": (v, n_v),
        "origin": (o, n_o),
        "season": (s, n_s),
        "origin_season": (o * n_s + s, n_o * n_s),
        "variety_origin": (v * n_o + o, n_v * n_o),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class CellModel:
    """Fitted cell means and covariance of one species; `grid(variety)` gives every (origin, season) cell."""

    sizes: tuple[int, int, int]
    effects: dict[str, np.ndarray]  # term -> (keys, k)
    evidence: dict[str, np.ndarray]  # term -> (keys,) lot counts
    shrinkage: dict[str, float]  # term -> lambda (lots' worth of prior weight)
    origin_neighbours: tuple[tuple[int, ...], ...]
    covariance: np.ndarray  # pooled within-cell, shrunk
    whitener: np.ndarray  # L with inv(covariance) = L @ L.T
    log_det: float
    outside_distance: float  # tau: scaled squared distance beyond which a lot is "outside every reference"
    cell_counts: np.ndarray  # (V, O, S)
    #: whitened_grid's results: they depend on the fitted model alone and every claim needs them.
    _whitened_grids: dict[tuple[object, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def dim(self) -> int:
        return int(self.covariance.shape[0])

    def whitened_grid(
        self, variety: int, *, extra_origin_neighbours: Sequence[int] | None = None, extra_season: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`grid`'s cell means whitened (O'*S', k), their squared norms (O'*S',) and the variance factors
        (O', S'); computed once per model and grid (read-only arrays)."""
        key = (variety, None if extra_origin_neighbours is None else tuple(extra_origin_neighbours), extra_season)
        cached = self._whitened_grids.get(key)
        if cached is None:
            means, variance = self.grid(
                variety, extra_origin_neighbours=extra_origin_neighbours, extra_season=extra_season
            )
            centres = means.reshape(-1, means.shape[-1]) @ self.whitener
            cached = (centres, (centres**2).sum(1), variance)
            for array in cached:
                array.flags.writeable = False
            if len(self._whitened_grids) >= 1024:  # unseen origins each add a grid: stay bounded
                self._whitened_grids.clear()
            self._whitened_grids[key] = cached
        return cached

    def _variance(self, term: str, key: int | np.ndarray) -> np.ndarray:
        return 1.0 / (self.evidence[term][key] + self.shrinkage[term])

    def grid(
        self, variety: int, *, extra_origin_neighbours: Sequence[int] | None = None, extra_season: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Means (O', S', k) and mean-variance factors (O', S') of every cell of a variety.

        With `extra_origin_neighbours` one more origin row is appended for an origin unit the reference
        has never seen (effect borrowed from its neighbours, or zero); with `extra_season` one more
        season column for an unseen season (effect zero). Their variance factors are the prior's.
        """
        _, n_o, n_s = self.sizes
        origin_eff = self.effects["origin"]
        origin_var = self._variance("origin", np.arange(n_o))
        if extra_origin_neighbours is not None:
            neighbours = list(extra_origin_neighbours)
            borrowed = origin_eff[neighbours].mean(axis=0) if neighbours else np.zeros(self.dim)
            origin_eff = np.vstack([origin_eff, borrowed])
            origin_var = np.append(origin_var, 1.0 / max(self.shrinkage["origin"], 1e-9))
        season_eff = self.effects["season"]
        season_var = self._variance("season", np.arange(n_s))
        if extra_season:
            season_eff = np.vstack([season_eff, np.zeros(self.dim)])
            season_var = np.append(season_var, 1.0 / max(self.shrinkage["season"], 1e-9))
        o_all, s_all = origin_eff.shape[0], season_eff.shape[0]
        inter = np.zeros((o_all, s_all, self.dim))
        inter_var = np.full((o_all, s_all), 1.0 / max(self.shrinkage["origin_season"], 1e-9))
        inter[:n_o, :n_s] = self.effects["origin_season"].reshape(n_o, n_s, self.dim)
        inter_var[:n_o, :n_s] = self._variance("origin_season", np.arange(n_o * n_s)).reshape(n_o, n_s)
        vo = np.zeros((o_all, self.dim))
        vo_var = np.full(o_all, 1.0 / max(self.shrinkage["variety_origin"], 1e-9))
        vo[:n_o] = self.effects["variety_origin"][variety * n_o : (variety + 1) * n_o]
        vo_var[:n_o] = self._variance("variety_origin", np.arange(variety * n_o, (variety + 1) * n_o))
        means = (
            self.effects["variety"][variety][None, None, :]
            + origin_eff[:, None, :]
            + season_eff[None, :, :]
            + inter
            + vo[:, None, :]
        )
        variance = (
            float(self._variance("variety", variety))
            + origin_var[:, None]
            + season_var[None, :]
            + inter_var
            + vo_var[:, None]
        )
        return means, variance


def fit_cell_model(
    stats: CellStatistics, *, origin_neighbours: Sequence[Sequence[int]] | None = None, outside_scale: float = 3.0
) -> CellModel:
    """Fit the shrunk additive cell means and the pooled within-cell covariance from sufficient statistics."""
    n_o = stats.sizes[1]
    k = stats.sums.shape[1]
    neighbours = tuple(tuple(int(j) for j in nb) for nb in (origin_neighbours or [() for _ in range(n_o)]))
    counts, sums = stats.counts.astype(np.float64), stats.sums.astype(np.float64)
    occupied = counts > 0
    total = float(counts.sum())
    n_cells = int(occupied.sum())
    cell_means = np.zeros_like(sums)
    cell_means[occupied] = sums[occupied] / counts[occupied, None]
    between = (sums[occupied] / np.sqrt(counts[occupied])[:, None]).T @ (
        sums[occupied] / np.sqrt(counts[occupied])[:, None]
    )
    terms = _term_keys(stats.cell_keys, stats.sizes)
    evidence = {t: np.bincount(keys, weights=counts, minlength=size) for t, (keys, size) in terms.items()}
    effects = {t: np.zeros((size, k)) for t, (_, size) in terms.items()}
    # Summing cells into their term's keys is a sparse product: 10x faster than np.add.at at 1000+ cells,
    # and this loop runs 150 times per fit (it dominates the daily update).
    summers = {
        t: sparse.csr_matrix((np.ones(len(keys)), (keys, np.arange(len(keys)))), shape=(size, len(keys)))
        for t, (keys, size) in terms.items()
    }

    def fitted() -> np.ndarray:
        return sum((effects[t][terms[t][0]] for t in TERMS), start=np.zeros_like(sums))

    # Within-cell scatter about raw cell means when there are enough lots; else about the fitted means.
    if total - n_cells >= max(2.0, 2.0 * k):
        within = (stats.scatter - between) / (total - n_cells)
        dof = total - n_cells
    else:
        within = None
        dof = max(total - 1.0, 1.0)
    sigma2 = float(np.trace(within)) / k if within is not None else 1.0
    shrinkage = {t: 0.0 if t == "variety" else 1.0 for t in TERMS}
    for sweep in range(_SWEEPS):
        # The fitted means are kept up to date term by term instead of re-summed 5 times per sweep.
        current = fitted()
        for term in TERMS:
            keys, size = terms[term]
            residual_sums = np.asarray(summers[term] @ (sums - counts[:, None] * (current - effects[term][keys])))
            n_key = evidence[term]
            prior = np.zeros((size, k))
            if term == "origin" and any(neighbours):
                for o, nb in enumerate(neighbours):
                    if nb:
                        prior[o] = effects["origin"][list(nb)].mean(axis=0)
            if term != "variety" and sweep % 5 == 0:
                shrinkage[term] = _estimate_shrinkage(residual_sums, n_key, prior, sigma2)
            lam = shrinkage[term]
            updated = (residual_sums + lam * prior) / np.maximum(n_key + lam, 1e-12)[:, None]
            current += (updated - effects[term])[keys]
            effects[term] = updated
        if within is None:
            # Too few lots for a raw within-cell covariance: use residuals about the fitted means.
            means = fitted()
            residual = stats.scatter - sums.T @ means - means.T @ sums + (means * counts[:, None]).T @ means
            sigma2 = max(float(np.trace(residual)) / (k * dof), 1e-12)
    if within is None:
        means = fitted()
        within = (stats.scatter - sums.T @ means - means.T @ sums + (means * counts[:, None]).T @ means) / dof
    within = (within + within.T) / 2.0
    covariance = oas_shrink(within, dof)
    whitener, log_det = _whitener(covariance)
    # "Outside every reference" starts where genuine lots rarely go: the mean distance of a lot to its
    # own cell, trace(inv(covariance) @ within) (about k for Gaussian cells), plus `outside_scale`
    # standard deviations of a chi-square with that many degrees of freedom.
    typical = max(float(np.trace(whitener.T @ within @ whitener)), 1.0)
    outside_distance = typical + outside_scale * np.sqrt(2.0 * typical)
    cell_counts = np.zeros(stats.sizes)
    v, o, s = stats.cell_keys.T
    np.add.at(cell_counts, (v, o, s), counts)
    return CellModel(
        sizes=stats.sizes,
        effects=effects,
        evidence=evidence,
        shrinkage=shrinkage,
        origin_neighbours=neighbours,
        covariance=covariance,
        whitener=whitener,
        log_det=log_det,
        outside_distance=outside_distance,
        cell_counts=cell_counts,
    )


def _estimate_shrinkage(residual_sums: np.ndarray, n_key: np.ndarray, prior: np.ndarray, sigma2: float) -> float:
    """Empirical-Bayes prior weight lambda = sigma^2 / tau^2 from the spread of the raw effects (method of moments)."""
    seen = n_key > 0
    if int(seen.sum()) < 2:
        return 1e6  # one key: its effect is not identifiable from the variety mean, keep it at the prior
    if sigma2 <= 0.0:
        return 0.0  # no within-cell noise (e.g. one exact feature): each key's own mean is exact
    k = residual_sums.shape[1]
    raw = residual_sums[seen] / n_key[seen, None] - prior[seen]
    tau2 = float(np.mean(np.sum(raw**2, axis=1) / k - sigma2 / n_key[seen]))
    tau2 = max(tau2, sigma2 * 1e-4)
    return sigma2 / tau2


def _whitener(covariance: np.ndarray) -> tuple[np.ndarray, float]:
    """L with inv(covariance) = L @ L.T (so ||(z - m) @ L||^2 is the Mahalanobis distance), and log det."""
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2.0)
    values = np.clip(values, max(float(values.max()), 1e-300) * 1e-10, None)
    return vectors / np.sqrt(values), float(np.sum(np.log(values)))
