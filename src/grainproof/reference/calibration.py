"""Nonconformity of lots to reference cells: the scores that conformal p-values rank.

A lot's distance to a cell is its squared Mahalanobis distance to the cell mean under the pooled
covariance, divided by (1 + the cell mean's own variance factor) so thin cells, whose means are
uncertain, are not mistaken for tight ones. The nonconformity of a declaration is a generalised
likelihood ratio: the distance to the declared cell minus the distance to the best alternative,
where the alternatives are every other cell of the variety and "outside every reference" at a fixed
distance tau (what a genuine lot rarely exceeds). So a lot that fits a neighbouring cell better
scores high even when it is close to both, and a lot far from every cell scores high too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grainproof.reference.cells import CellModel


def cell_distances(
    cells: CellModel,
    z: np.ndarray,
    variety: int,
    *,
    extra_origin_neighbours: Sequence[int] | None = None,
    extra_season: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled squared distances (n, O', S') of lots z (n, k) to every (origin, season) cell of a variety,
    and the cells' mean-variance factors (O', S')."""
    centres, centres_squared, variance = cells.whitened_grid(
        variety, extra_origin_neighbours=extra_origin_neighbours, extra_season=extra_season
    )
    n_o, n_s = variance.shape
    y = np.atleast_2d(z) @ cells.whitener
    squared = (y**2).sum(1)[:, None] - 2.0 * y @ centres.T + centres_squared[None, :]
    squared = np.maximum(squared, 0.0).reshape(-1, n_o, n_s)
    return squared / (1.0 + variance)[None], variance


def cell_log_posterior(
    cells: CellModel,
    z: np.ndarray,
    variety: int,
    *,
    outside_prior: float,
    prior: np.ndarray | None = None,
    extra_origin_neighbours: Sequence[int] | None = None,
    extra_season: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Log posterior (n, O', S') of each cell and (n,) of "outside every reference", for lots z (n, k).

    Cells are Gaussian (covariance widened by their mean's uncertainty); "outside" is a flat density at
    the level of a lot at distance tau from a cell. `prior` (O', S') weights the cells (flat when None);
    "outside" gets `outside_prior`.
    """
    distances, variance = cell_distances(
        cells, z, variety, extra_origin_neighbours=extra_origin_neighbours, extra_season=extra_season
    )
    log_like = -0.5 * distances - 0.5 * cells.dim * np.log1p(variance)[None]
    weights = np.ones(variance.shape) if prior is None else np.asarray(prior, dtype=np.float64)
    log_prior = np.log(weights / weights.sum() * (1.0 - outside_prior))
    log_background = np.full(len(distances), -0.5 * cells.outside_distance + np.log(outside_prior))
    joint = log_like + log_prior[None]
    flat = joint.reshape(len(joint), -1)
    top = np.maximum(flat.max(1), log_background)
    norm = top + np.log(np.exp(flat - top[:, None]).sum(1) + np.exp(log_background - top))
    return joint - norm[:, None, None], log_background - norm


def declaration_nonconformity(
    distances: np.ndarray, tau: float | np.ndarray, origins: np.ndarray, seasons: np.ndarray, undated: np.ndarray
) -> np.ndarray:
    """(n, 3) joint, origin and season nonconformity from distances (n, O, S) and declared indices;
    `tau` is one threshold, or one per row (n,) when rows come from different models (folds).

    Joint: distance to the declared cell minus the best of (any other cell, tau). Origin: the declared
    origin's best season against every other origin's best (or tau). Season: the declared season's best
    origin against every other season's best (or tau). Undated declarations get the origin score as
    joint and NaN for season.
    """
    n = len(origins)
    local = np.arange(n)
    d = np.asarray(distances, dtype=np.float64)
    declared = d[local, origins, seasons]
    others = d.copy()
    others[local, origins, seasons] = np.inf
    joint = declared - np.minimum(tau, others.reshape(n, -1).min(1))
    by_origin = d.min(axis=2)  # (n, O)
    own_origin = by_origin[local, origins]
    by_origin[local, origins] = np.inf
    origin = own_origin - np.minimum(tau, by_origin.min(1))
    by_season = d.min(axis=1)  # (n, S)
    own_season = by_season[local, seasons]
    by_season[local, seasons] = np.inf
    season = own_season - np.minimum(tau, by_season.min(1))
    out = np.empty((n, 3))
    out[:, 0] = np.where(undated, origin, joint)
    out[:, 1] = origin
    out[:, 2] = np.where(undated, np.nan, season)
    return out


def nonconformity_for_lots(
    cells: CellModel,
    z: np.ndarray,
    keys: np.ndarray,
    *,
    seasons: Sequence[int | None],
    outside_prior: float | None = None,
) -> np.ndarray:
    """(n, 3) joint, origin and season nonconformity of lots z against their own cells `keys` (n, 3).

    `outside_prior` is accepted for callers that pass the model options; the score does not use it.
    """
    del outside_prior
    out = np.full((len(keys), 3), np.nan)
    no_season = seasons.index(None) if None in seasons else -1
    for variety in np.unique(keys[:, 0]):
        if cells.evidence["variety"][variety] <= 0:
            # The model holds no lot of this variety (a cross-conformal fold that took all of them): its mean is
            # unknown and its variance infinite, so these lots cannot be scored out of sample. They stay out of
            # the calibration (NaN), as lots of a variety new to an incremental update do.
            continue
        rows = np.flatnonzero(keys[:, 0] == variety)
        for start in range(0, len(rows), 4096):
            chunk = rows[start : start + 4096]
            distances, _ = cell_distances(cells, z[chunk], int(variety))
            out[chunk] = declaration_nonconformity(
                distances, cells.outside_distance, keys[chunk, 1], keys[chunk, 2], keys[chunk, 2] == no_season
            )
    return out
