"""Reference cells (variety, origin unit, season): an additive hierarchical mean, and a covariance per origin.

A cell's mean is variety + origin + season + origin x season + variety x origin effects. Every
effect but the variety's is shrunk toward its prior (zero, or for origins the mean of their
spatial neighbours) in proportion to how little evidence it has, so a cell with one lot, or none
when its origin and season are each seen elsewhere, still has a mean, with a wider uncertainty.

Lots of one origin may spread differently from another's (a wetter region, a coarser phone mix), so
each variety x origin group has its own within-cell covariance, shrunk toward the pooled one by a
conjugate (normal-inverse-Wishart) prior whose strength is estimated from the groups themselves: a
group with few lots keeps the pooled shape, a well-populated one earns its own. A lot's density in a
cell is then the posterior predictive, a multivariate Student t, which is heavier-tailed where the
group's covariance is less certain, and where the reference's lots fall further out than that t allows
(`fit_tail_dof`: one cap on its degrees of freedom per species, fitted to the lots' out-of-fold distances).

Everything is fitted from sufficient statistics (counts, sums, scatter matrices), which is what
makes incremental updates and cross-conformal folds cheap: a fold's model is the total minus the fold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import sparse, special
from scipy.special import gammaln

from grainproof.reference.space import oas_covariance

#: The additive terms, in backfitting order.
TERMS: tuple[str, ...] = ("variety", "origin", "season", "origin_season", "variety_origin")
#: Backfitting sweeps; the fit is linear, so this converges quickly.
_SWEEPS = 30


#: Up to this many lots, `log_densities` computes every origin at once; beyond, origin by origin (each lot
#: needs only its shortlist).
_FEW_LOTS = 16


def log_tail_f(x: np.ndarray, k: int, dof: float | np.ndarray) -> np.ndarray:
    """log P(F(k, dof) >= x), accurate far into the tail (where the plain survival function underflows to 0)."""
    values, dof_values = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(dof, dtype=np.float64))
    with np.errstate(divide="ignore"):
        out = np.log(special.fdtrc(k, dof_values, np.maximum(values, 0.0)))
    far = ~np.isfinite(out)
    if far.any():
        # Beyond ~1e-300 the law is (nearly) chi-square / k: the upper incomplete gamma's asymptotic expansion,
        # which is steeper than the F tail, so the surprise keeps rising with x.
        a = 0.5 * k
        y = a * values[far]
        out[far] = (a - 1.0) * np.log(y) - y - special.gammaln(a) + np.log1p(max(a - 1.0, 0.0) / y)
    return out


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
    #: (G, k, k): sum of z z^T over the lots of each variety x origin group (group_of_cell gives a cell's group).
    group_scatter: np.ndarray
    group_of_cell: np.ndarray  # (C,) int

    @property
    def total(self) -> int:
        return round(float(self.counts.sum()))


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
class _Grid:
    """The cells of one variety (O' origins x S' seasons) with what scoring a lot against them needs."""

    means: np.ndarray  # (O', S', k)
    variance: np.ndarray  # (O', S'): each cell mean's variance factor v
    groups: np.ndarray  # (O',): the row of group_whiteners each origin is measured with
    dof: np.ndarray  # (O',): Student t degrees of freedom of each origin's predictive
    #: (O', S'): what a cell's squared whitened distance is divided by: the mean's uncertainty (1 + v) times the
    #: origin's stretch when the reference's tails are heavier than its groups' own t (`CellModel.tail_dof`).
    spread: np.ndarray
    centres: np.ndarray  # (O', S', k): cell means whitened by their origin's group
    centres_squared: np.ndarray  # (O', S')
    constant: np.ndarray  # (O', S'): log density's normalising constant of each cell
    pooled_centres: np.ndarray  # (O' * S', k): cell means whitened by the pooled covariance
    pooled_squared: np.ndarray  # (O' * S',)


@dataclass(frozen=True, slots=True, kw_only=True)
class CellModel:
    """Fitted cell means and covariances of one species; `grid(variety)` gives every (origin, season) cell,
    `log_densities` a lot's predictive log density and tail surprise in each of them."""

    sizes: tuple[int, int, int]
    effects: dict[str, np.ndarray]  # term -> (keys, k)
    evidence: dict[str, np.ndarray]  # term -> (keys,) lot counts
    shrinkage: dict[str, float]  # term -> lambda (lots' worth of prior weight)
    origin_neighbours: tuple[tuple[int, ...], ...]
    covariance: np.ndarray  # pooled within-cell, shrunk (the prior's centre)
    whitener: np.ndarray  # L with inv(covariance) = L @ L.T: the space nearest lots and admixture are read in
    log_det: float
    #: (V, O) int: the row of group_whiteners for each variety x origin; the last row (the prior) for a pair the
    #: reference has no lots of.
    group_index: np.ndarray
    group_whiteners: np.ndarray  # (G + 1, k, k): L_g with inv(predictive scale_g) = L_g @ L_g.T
    group_log_det: np.ndarray  # (G + 1,): log det of each predictive scale
    group_dof: np.ndarray  # (G + 1,): Student t degrees of freedom of each group's predictive
    prior_dof: float  # nu_0 of the inverse-Wishart prior on group covariances (its weight, in lots)
    cell_counts: np.ndarray  # (V, O, S)
    #: Degrees of freedom that cap every group's Student t, fitted to how far genuine lots fall from their cells out
    #: of fold (`fit_tail_dof`); infinite: each group's own t. The predictive's covariance is kept.
    tail_dof: float = math.inf
    #: grid results per (variety, extras): they depend on the fitted model alone and every claim needs them.
    _grids: dict[tuple[object, ...], _Grid] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.covariance.shape[0])

    def cached_grid(
        self, variety: int, *, extra_origin_neighbours: Sequence[int] | None = None, extra_season: bool = False
    ) -> _Grid:
        """`grid`'s cells of a variety with everything a lot's densities need that does not depend on the lot,
        computed once per model and grid (read-only arrays)."""
        key = (variety, None if extra_origin_neighbours is None else tuple(extra_origin_neighbours), extra_season)
        cached = self._grids.get(key)
        if cached is None:
            means, variance = self.grid(
                variety, extra_origin_neighbours=extra_origin_neighbours, extra_season=extra_season
            )
            k = self.dim
            groups = np.full(means.shape[0], len(self.group_whiteners) - 1, dtype=np.int64)
            groups[: self.sizes[1]] = self.group_index[variety]
            group_dof = self.group_dof[groups]
            dof = np.minimum(group_dof, self.tail_dof)
            stretch = tail_stretch(group_dof, dof)
            spread = (1.0 + variance) * stretch[:, None]
            own = np.einsum("osk,okj->osj", means, self.group_whiteners[groups])  # each origin in its own metric
            constant = (
                gammaln((dof + k) / 2.0)
                - gammaln(dof / 2.0)
                - 0.5 * k * np.log(dof * np.pi)
                - 0.5 * self.group_log_det[groups]
            )[:, None] - 0.5 * k * np.log(spread)
            pooled = means.reshape(-1, k) @ self.whitener
            cached = _Grid(
                means=means,
                variance=variance,
                groups=groups,
                dof=dof,
                spread=spread,
                centres=own,
                centres_squared=(own**2).sum(-1),
                constant=constant,
                pooled_centres=pooled,
                pooled_squared=(pooled**2).sum(-1),
            )
            for name in _Grid.__dataclass_fields__:
                getattr(cached, name).flags.writeable = False
            if len(self._grids) >= 1024:  # unseen origins each add a grid: stay bounded
                self._grids.clear()
            self._grids[key] = cached
        return cached

    def log_densities(
        self,
        z: np.ndarray,
        variety: int,
        *,
        origins: np.ndarray | None = None,
        extra_origin_neighbours: Sequence[int] | None = None,
        extra_season: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predictive log density (n, O', S') of lots z (n, k) in every cell of a variety, and the tail surprise
        -log P(a genuine lot of the cell lies at least as far out), both -inf / +inf where not computed.

        `origins` (n, O') bool or None: which origin rows to compute for each lot (all when None). A cell's
        predictive is a Student t around its shrunk mean, with its group's covariance widened by the mean's
        own uncertainty (1 + v); its tail is exact: q / k follows an F(k, dof) law for a genuine lot.
        """
        grid = self.cached_grid(variety, extra_origin_neighbours=extra_origin_neighbours, extra_season=extra_season)
        zz = np.atleast_2d(np.asarray(z, dtype=np.float64))
        n, (n_o, n_s) = len(zz), grid.variance.shape
        k = self.dim
        log_density = np.full((n, n_o, n_s), -np.inf)
        surprise = np.full((n, n_o, n_s), np.inf)
        wanted = np.ones((n, n_o), dtype=bool) if origins is None else np.asarray(origins, dtype=bool)
        needed = np.flatnonzero(wanted.any(axis=0))
        if n <= _FEW_LOTS:
            # A claim: every needed origin at once (no Python loop), masked afterwards.
            y = zz[None, :, :] @ self.group_whiteners[grid.groups[needed]]  # (m, n, k)
            cross = np.einsum("mnk,msk->nms", y, grid.centres[needed])
            squared = (y**2).sum(-1).T[:, :, None] - 2.0 * cross + grid.centres_squared[needed][None]
            distance = np.maximum(squared, 0.0) / grid.spread[needed][None]
            dof = grid.dof[needed][None, :, None]
            keep = wanted[:, needed][:, :, None]
            log_density[:, needed] = np.where(
                keep, grid.constant[needed][None] - 0.5 * (dof + k) * np.log1p(distance / dof), -np.inf
            )
            surprise[:, needed] = np.where(keep, -log_tail_f(distance / k, k, dof), np.inf)
            return log_density, surprise
        for o in needed:
            lots = np.flatnonzero(wanted[:, o])
            dof_o = float(grid.dof[o])
            y2 = zz[lots] @ self.group_whiteners[grid.groups[o]]
            squared2 = (y2**2).sum(1)[:, None] - 2.0 * y2 @ grid.centres[o].T + grid.centres_squared[o][None, :]
            distance2 = np.maximum(squared2, 0.0) / grid.spread[o][None, :]
            log_density[lots, o] = grid.constant[o][None, :] - 0.5 * (dof_o + k) * np.log1p(distance2 / dof_o)
            surprise[lots, o] = -log_tail_f(distance2 / k, k, dof_o)
        return log_density, surprise

    def with_tail_dof(self, tail_dof: float) -> CellModel:
        """This model with every group's t capped at `tail_dof` degrees of freedom (its grids recomputed)."""
        return replace(self, tail_dof=float(tail_dof), _grids={})

    def own_distances(self, z: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (n,) of lots z (n, k) to their own cells `keys` (n, 3) as each group's own t reads
        them (whitened by the group, over 1 + v), and those t's degrees of freedom (n,): what `fit_tail_dof`
        compares with the F law they would follow. Lots of a variety the model holds no lot of get NaN."""
        zz = np.atleast_2d(np.asarray(z, dtype=np.float64))
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 3)
        distance, dof = np.full(len(zz), np.nan), np.full(len(zz), np.nan)
        for variety in np.unique(keys[:, 0]).tolist():
            if self.evidence["variety"][variety] <= 0:
                continue
            grid = self.cached_grid(variety)
            of_variety = keys[:, 0] == variety
            for origin in np.unique(keys[of_variety, 1]).tolist():
                rows = np.flatnonzero(of_variety & (keys[:, 1] == origin))
                seasons = keys[rows, 2]
                group = grid.groups[origin]
                y = zz[rows] @ self.group_whiteners[group]
                squared = ((y - grid.centres[origin, seasons]) ** 2).sum(axis=1)
                distance[rows] = squared / (1.0 + grid.variance[origin, seasons])
                dof[rows] = self.group_dof[group]
        return distance, dof

    def pooled_distances(self, z: np.ndarray, variety: int) -> np.ndarray:
        """Squared Mahalanobis distances (n, O, S) of lots to every seen cell of a variety under the pooled
        covariance: one whitening for all cells, cheap enough to shortlist cells for `log_densities`."""
        grid = self.cached_grid(variety)
        y = np.atleast_2d(np.asarray(z, dtype=np.float64)) @ self.whitener
        squared = (y**2).sum(1)[:, None] - 2.0 * y @ grid.pooled_centres.T + grid.pooled_squared[None, :]
        return np.maximum(squared, 0.0).reshape(len(y), *grid.variance.shape) / (1.0 + grid.variance)[None]

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
    stats: CellStatistics,
    *,
    origin_neighbours: Sequence[Sequence[int]] | None = None,
    prior_dof: float | None = None,
    tail_dof: float = math.inf,
) -> CellModel:
    """Fit the shrunk additive cell means, the pooled within-cell covariance and each variety x origin group's
    covariance from sufficient statistics.

    `prior_dof` fixes the weight of the pooled covariance in each group's (in lots); by default it is
    estimated from the groups (empirical Bayes). `tail_dof` caps the groups' t (`fit_tail_dof`).
    """
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
                shrinkage[term] = estimate_effect_shrinkage(residual_sums, n_key, prior, sigma2)
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
    within = _measurable_within(within, stats, total)
    covariance = oas_covariance(within, dof)
    whitener, log_det = _whitener(covariance)
    group_scatter = _group_within_scatter(stats, cell_means)
    group_dof = np.bincount(stats.group_of_cell, weights=counts, minlength=len(group_scatter)) - np.bincount(
        stats.group_of_cell, weights=occupied.astype(float), minlength=len(group_scatter)
    )
    nu0 = prior_dof if prior_dof is not None else estimate_prior_dof(covariance, group_scatter, group_dof)
    whiteners, log_dets, dofs = group_predictives(covariance, group_scatter, group_dof, nu0)
    cell_counts = np.zeros(stats.sizes)
    v, o, s = stats.cell_keys.T
    np.add.at(cell_counts, (v, o, s), counts)
    group_index = np.full(stats.sizes[:2], len(group_scatter), dtype=np.int64)
    group_index[v, o] = stats.group_of_cell
    return CellModel(
        sizes=stats.sizes,
        effects=effects,
        evidence=evidence,
        shrinkage=shrinkage,
        origin_neighbours=neighbours,
        covariance=covariance,
        whitener=whitener,
        log_det=log_det,
        group_index=group_index,
        group_whiteners=whiteners,
        group_log_det=log_dets,
        group_dof=dofs,
        prior_dof=nu0,
        cell_counts=cell_counts,
        tail_dof=float(tail_dof),
    )


def _measurable_within(within: np.ndarray, stats: CellStatistics, total: float) -> np.ndarray:
    """The within-cell covariance, or the spread of all lots about their grand mean where the lots leave the
    within-cell noise unmeasured (each lot alone in its cell, or fitted exactly): an upper bound on the noise,
    so such a reference flags less rather than scoring with a zero covariance. Always positive definite."""
    k = within.shape[0]
    within = (within + within.T) / 2.0
    grand = stats.sums.sum(axis=0).astype(np.float64)
    spread = (stats.scatter - np.outer(grand, grand) / max(total, 1.0)) / max(total - 1.0, 1.0)
    spread = (spread + spread.T) / 2.0
    scale = max(float(np.trace(spread)) / k, 1e-12)
    if float(np.trace(within)) / k <= 1e-9 * scale:
        within = spread
    values, vectors = np.linalg.eigh(within)
    return (vectors * np.maximum(values, 1e-9 * scale)) @ vectors.T


def _group_within_scatter(stats: CellStatistics, cell_means: np.ndarray) -> np.ndarray:
    """(G, k, k) scatter of each group's lots about their own cells' raw means."""
    groups = len(stats.group_scatter)
    cells, k = stats.sums.shape
    cell_part = (stats.sums[:, :, None] * cell_means[:, None, :]).reshape(cells, k * k)  # n_c mean mean^T
    summer = sparse.csr_matrix((np.ones(cells), (stats.group_of_cell, np.arange(cells))), shape=(groups, cells))
    scatter = stats.group_scatter - np.asarray(summer @ cell_part).reshape(groups, k, k)
    return (scatter + np.swapaxes(scatter, 1, 2)) / 2.0


#: Most groups the prior weight is estimated from (the largest): one number needs few, and each costs an
#: eigen-decomposition.
_PRIOR_GROUPS = 24


def estimate_prior_dof(covariance: np.ndarray, group_scatter: np.ndarray, group_dof: np.ndarray) -> float:
    """nu_0 of the inverse-Wishart prior (centred on the pooled covariance) that makes the groups' own
    within-cell scatters most likely (type-II maximum likelihood over a grid).

    Groups whose covariances all match the pooled one drive it to the top of the grid (every group gets
    the pooled shape); groups that differ earn a small nu_0 (each keeps its own).
    """
    k = covariance.shape[0]
    usable = np.flatnonzero(group_dof >= 1)
    top = float(1e6 + k + 1)
    if not len(usable):
        return top
    usable = usable[np.lexsort((usable, -group_dof[usable]))][:_PRIOR_GROUPS]
    root_inverse, _ = _whitener(covariance)
    relative = root_inverse.T[None] @ group_scatter[usable] @ root_inverse[None]
    eigen = np.clip(np.linalg.eigvalsh((relative + np.swapaxes(relative, 1, 2)) / 2.0), 0.0, None)  # (g, k)
    dof = group_dof[usable]
    grid = np.geomspace(1.0, 1e6, 49)
    nu0 = grid + k + 1.0  # (grid,)
    # log of the multivariate gamma function, for every grid value and group at once.
    half = 0.5 * (1.0 - np.arange(1, k + 1))
    lgamma_k = lambda a: special.gammaln(a[..., None] + half).sum(-1)  # noqa: E731
    value = (
        0.5 * nu0[:, None] * k * np.log(grid)[:, None]
        - 0.5 * (nu0[:, None] + dof[None, :]) * np.log(grid[:, None, None] + eigen[None]).sum(-1)
        + lgamma_k(0.5 * (nu0[:, None] + dof[None, :]))
        - lgamma_k(0.5 * nu0)[:, None]
    ).sum(axis=1)
    return float(nu0[int(np.argmax(value))])


def group_predictives(
    covariance: np.ndarray, group_scatter: np.ndarray, group_dof: np.ndarray, nu0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whiteners (G + 1, k, k), log determinants and Student t degrees of freedom of each group's posterior
    predictive covariance, the last row being the prior's (a group without lots)."""
    k = covariance.shape[0]
    c = nu0 - k - 1.0
    scatter = np.concatenate([group_scatter, np.zeros((1, k, k))])
    dof_n = nu0 + np.append(group_dof, 0.0)
    t_dof = dof_n - k + 1.0
    scales = (c * covariance[None] + scatter) / t_dof[:, None, None]
    scales = (scales + np.swapaxes(scales, 1, 2)) / 2.0 + 1e-12 * np.trace(covariance) / k * np.eye(k)[None]
    lower = np.linalg.cholesky(scales)
    whiteners = np.swapaxes(np.linalg.inv(lower), 1, 2)
    log_dets = 2.0 * np.log(np.diagonal(lower, axis1=1, axis2=2)).sum(axis=1)
    return whiteners, log_dets, t_dof


def estimate_effect_shrinkage(residual_sums: np.ndarray, n_key: np.ndarray, prior: np.ndarray, sigma2: float) -> float:
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


def tail_stretch(group_dof: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Factor on a t's scale that keeps its covariance when its degrees of freedom go from `group_dof` down to
    `dof` (a t's covariance is scale * dof / (dof - 2)): heavier tails, a narrower middle, the same spread."""
    group_dof, dof = np.asarray(group_dof, dtype=np.float64), np.asarray(dof, dtype=np.float64)
    capped = (dof < group_dof) & (group_dof > 2.0) & (dof > 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = group_dof / (group_dof - 2.0) * (dof - 2.0) / dof
    return np.where(capped, factor, 1.0)


#: Degrees of freedom `fit_tail_dof` chooses among (a t's covariance needs more than 2); infinity is the
#: groups' own t, kept unless a cap fits genuine lots' distances better.
TAIL_DOF_GRID: tuple[float, ...] = tuple(float(v) for v in np.geomspace(2.5, 1000.0, 60))
#: Fewest out-of-fold distances a tail is fitted on; with fewer the groups' own t is kept.
MIN_TAIL_LOTS = 30
#: Most lots a tail is fitted on (chosen by a hash of their ids): one number needs few, and the build stays flat.
MAX_TAIL_LOTS = 5000
#: Twice the log-likelihood gain a cap must bring over the groups' own t to be adopted: the 5 % point of the
#: likelihood-ratio law on the boundary (half a chi-square with one degree of freedom), so a Gaussian
#: reference keeps its t but by chance (5 % of builds, and then with a cap near its own).
TAIL_LIKELIHOOD_GAIN = 2.71


def fit_tail_dof(distance: np.ndarray, group_dof: np.ndarray, k: int) -> float:
    """Degrees of freedom that cap the groups' Student t, by maximum likelihood on genuine lots' out-of-fold
    squared distances to their own cells (`CellModel.own_distances`).

    Under a group's t a genuine lot's distance / k follows F(k, dof); real classes are often heavier-tailed
    than the t the within-cell scatter implies (skewed chemical compositions, zeros: 11 to 16 % of glass
    lots fall in the t's outer 2 %). Capping the degrees of freedom at the value whose F law (with the
    covariance kept, `tail_stretch`) makes the observed distances most likely puts the tail surprise and the
    likelihood ratios back on the scale of genuine lots. A cap is adopted only where it fits significantly
    better (`TAIL_LIKELIHOOD_GAIN`): Gaussian-like references keep infinity.
    """
    distance, group_dof = np.asarray(distance, dtype=np.float64), np.asarray(group_dof, dtype=np.float64)
    usable = np.isfinite(distance) & np.isfinite(group_dof) & (group_dof > 0)
    distance, group_dof = np.maximum(distance[usable], 1e-300), group_dof[usable]
    if len(distance) < MIN_TAIL_LOTS or k < 1:
        return math.inf

    # The groups' degrees of freedom take few values: every term but one is computed per (cap, value).
    values_of_dof, lot_dof = np.unique(group_dof, return_inverse=True)
    caps = np.array([math.inf, *TAIL_DOF_GRID])[:, None]  # (1 + grid, 1): the groups' own t first
    dof = np.minimum(values_of_dof[None, :], caps)  # (1 + grid, U)
    stretch = tail_stretch(np.broadcast_to(values_of_dof, dof.shape), dof)
    # log density of F(k, dof) at x = distance / (stretch k), plus the Jacobian -log(stretch k), summed over lots.
    per_value = (
        0.5 * k * np.log(k)
        + 0.5 * dof * np.log(dof)
        - special.betaln(0.5 * k, 0.5 * dof)
        - 0.5 * k * np.log(stretch * k)
    )
    lots_per_value = np.bincount(lot_dof, minlength=len(values_of_dof))
    values = (
        per_value @ lots_per_value
        + (0.5 * k - 1.0) * np.log(distance).sum()
        - (0.5 * (k + dof[:, lot_dof]) * np.log(dof[:, lot_dof] + distance / stretch[:, lot_dof])).sum(axis=1)
    )
    best = 1 + int(np.argmax(values[1:]))
    return TAIL_DOF_GRID[best - 1] if 2.0 * (values[best] - values[0]) > TAIL_LIKELIHOOD_GAIN else math.inf
