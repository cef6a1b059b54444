"""Nonconformity of lots to reference cells: the scores that conformal p-values rank.

A declaration is tested against two kinds of alternative, and its score is the stronger evidence:

* another cell of the reference explains the lot better: the log likelihood ratio of the best other
  cell's predictive density to the declared cell's (a false origin or season that the reference knows);
* the lot lies in the declared cell's outer tail, where genuine lots rarely go: the tail surprise
  -log P(a genuine lot of the cell lies at least as far out), beyond the level `outside_tail` that marks
  "outside every reference" (an origin the reference does not know).

Both are in nats of evidence, so `max(ratio, surprise - log(1 / outside_tail))` compares them on one
scale: with `outside_tail` = 0.02 a lot must be in its cell's outer 2 % before its distance counts, so
genuine lots in a heavy tail do not drown the likelihood ratio, and a lot far from every cell is still
caught. The tail is exact under each cell's Student t predictive, so the surprise means the same in a
thin cell and a rich one, and calibration groups that pool cells stay comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grainproof.reference.cells import CellModel

#: Origins (besides the declared one) whose cells get the exact per-origin density, shortlisted by the pooled
#: distance. The best alternative is almost always among them, and the cost stays flat however many origins a
#: variety has. Calibration lots and claims are scored the same way, so the p-values stay valid.
SHORTLIST_ORIGINS = 8

#: Columns of a nonconformity row (and of a model's calibration scores).
JOINT, ORIGIN, SEASON, INSIDE, VARIETY = 0, 1, 2, 3, 4
#: Columns scored against a variety's cells (`score_lots`); the variety column comes from reference.varieties.
CELL_COLUMNS = 4
SCORE_COLUMNS = 5


def shortlist(
    cells: CellModel, z: np.ndarray, variety: int, declared_origins: np.ndarray, n_origins: int
) -> np.ndarray:
    """(n, n_origins) bool: the declared origin and the SHORTLIST_ORIGINS seen origins nearest each lot."""
    n = len(z)
    seen = cells.sizes[1]
    mask = np.zeros((n, n_origins), dtype=bool)
    mask[np.arange(n), declared_origins] = True
    if seen <= SHORTLIST_ORIGINS:
        mask[:, :seen] = True
        return mask
    nearest = cells.pooled_distances(z, variety).min(axis=2)  # (n, O)
    top = np.argpartition(nearest, SHORTLIST_ORIGINS - 1, axis=1)[:, :SHORTLIST_ORIGINS]
    mask[np.arange(n)[:, None], top] = True
    return mask


def declaration_nonconformity(
    log_density: np.ndarray,
    surprise: np.ndarray,
    origins: np.ndarray,
    seasons: np.ndarray,
    undated: np.ndarray,
    outside_tail: float,
) -> np.ndarray:
    """(n, 4) joint, origin, season and inside nonconformity from log densities and tail surprises (n, O, S)
    and the declared cells.

    Joint: the best other cell against the declared cell, or the declared cell's tail beyond `outside_tail`.
    Origin: the same with each origin at its best season; season: each season at its best origin. Inside:
    the tail surprise of the best-fitting cell (high when the lot fits no cell at all). Undated declarations
    get the origin score as joint and NaN for season.
    """
    n = len(origins)
    rows = np.arange(n)
    threshold = np.log(1.0 / outside_tail)
    ld = np.asarray(log_density, dtype=np.float64)
    sp = np.asarray(surprise, dtype=np.float64)

    def score(own_density: np.ndarray, other_density: np.ndarray, own_surprise: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isfinite(other_density), other_density - own_density, -np.inf)
        return np.maximum(ratio, own_surprise - threshold)

    others = ld.copy()
    others[rows, origins, seasons] = -np.inf
    joint = score(ld[rows, origins, seasons], others.reshape(n, -1).max(1), sp[rows, origins, seasons])
    by_origin = ld.max(axis=2)  # (n, O): each origin at its best season
    own_origin = by_origin[rows, origins]
    by_origin[rows, origins] = -np.inf
    origin = score(own_origin, by_origin.max(1), sp[rows, origins, :].min(axis=1))
    by_season = ld.max(axis=1)  # (n, S): each season at its best origin
    own_season = by_season[rows, seasons]
    by_season[rows, seasons] = -np.inf
    season = score(own_season, by_season.max(1), sp[rows, :, seasons].min(axis=1))
    out = np.empty((n, CELL_COLUMNS))
    out[:, JOINT] = np.where(undated, origin, joint)
    out[:, ORIGIN] = origin
    out[:, SEASON] = np.where(undated, np.nan, season)
    out[:, INSIDE] = sp.reshape(n, -1).min(axis=1)
    return out


def nonconformity_for_lots(
    cells: CellModel,
    z: np.ndarray,
    keys: np.ndarray,
    *,
    seasons: Sequence[int | None],
    outside_tail: float,
) -> np.ndarray:
    """(n, 4) nonconformity of lots z against their own cells `keys` (n, 3): the calibration scores."""
    out = np.full((len(keys), CELL_COLUMNS), np.nan)
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
            out[chunk] = score_lots(
                cells,
                z[chunk],
                int(variety),
                keys[chunk, 1],
                keys[chunk, 2],
                keys[chunk, 2] == no_season,
                outside_tail=outside_tail,
            )
    return out


def score_lots(
    cells: CellModel,
    z: np.ndarray,
    variety: int,
    origins: np.ndarray,
    seasons: np.ndarray,
    undated: np.ndarray,
    *,
    outside_tail: float,
    extra_origin_neighbours: Sequence[int] | None = None,
    extra_season: bool = False,
) -> np.ndarray:
    """(n, 4) nonconformity of lots z (n, k) declared as (origins, seasons) of one variety: the one scoring
    path shared by calibration lots and claims (which is what keeps them exchangeable)."""
    n_origins = cells.sizes[1] + (extra_origin_neighbours is not None)
    mask = shortlist(cells, z, variety, np.asarray(origins), n_origins)
    log_density, surprise = cells.log_densities(
        z, variety, origins=mask, extra_origin_neighbours=extra_origin_neighbours, extra_season=extra_season
    )
    return declaration_nonconformity(log_density, surprise, origins, seasons, undated, outside_tail)


def score_declarations(
    cells: CellModel,
    z: np.ndarray,
    variety: int,
    origins: np.ndarray,
    seasons: np.ndarray,
    undated: np.ndarray,
    *,
    outside_tail: float,
    extra_origin_neighbours: Sequence[int] | None = None,
    extra_season: bool = False,
) -> np.ndarray:
    """(m, 4) nonconformity of ONE lot z (1, k) declared in m ways (a claim and its alternatives): the same
    scores `score_lots` gives each declaration, with the lot's densities computed once."""
    n_origins = cells.sizes[1] + (extra_origin_neighbours is not None)
    declared = np.asarray(origins)
    near = shortlist(cells, np.atleast_2d(z), variety, declared[:1], n_origins)[0]
    masks = np.repeat(near[None], len(declared), axis=0)
    masks[np.arange(len(declared)), declared] = True
    log_density, surprise = cells.log_densities(
        np.atleast_2d(z),
        variety,
        origins=np.asarray(masks.any(axis=0, keepdims=True)),
        extra_origin_neighbours=extra_origin_neighbours,
        extra_season=extra_season,
    )
    # Each declaration sees only its own shortlist, as a calibration lot declared that way would.
    keep = masks[:, :, None]
    return declaration_nonconformity(
        np.where(keep, log_density, -np.inf),
        np.where(keep, surprise, np.inf),
        declared,
        np.asarray(seasons),
        np.asarray(undated),
        outside_tail,
    )
