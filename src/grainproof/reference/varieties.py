"""Variety identity: the varieties of a species as classes, for lots and for single kernels.

A lot declared as one variety but made of another (or cut with a cheaper one) is the commonest fraud at the
intake after false origins. Lots: each variety is a class with its own mean and one within-variety covariance
shared by all (`fit_pooled_class_densities`), in a reduced space of its own (`SpeciesReference.variety_space`),
and a lot's density under a variety is the Student t predictive. Kernels (units, for purity): each variety
has its own covariance, shrunk toward the pooled one (`fit_class_densities`).
Everything is fitted from counts, sums and scatter matrices, so folds and updates stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.special import gammaln

from grainproof.reference.cells import estimate_effect_shrinkage, estimate_prior_dof, group_predictives
from grainproof.reference.space import oas_covariance


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassDensities:
    """Student t predictive densities of C classes (varieties) in the reduced space."""

    means: np.ndarray  # (C, k)
    counts: np.ndarray  # (C,)
    whiteners: np.ndarray  # (C, k, k): inv(scale_c) = L_c @ L_c.T
    constants: np.ndarray  # (C,): normalising constant of each class's density
    dof: np.ndarray  # (C,)
    mean_factor: np.ndarray  # (C,): 1 + 1/n_c, the class mean's own uncertainty

    @property
    def classes(self) -> int:
        return len(self.means)

    def log_densities(self, z: np.ndarray) -> np.ndarray:
        """(n, C) log density of each vector z (n, k) under each class; -inf for a class without lots."""
        zz = np.atleast_2d(np.asarray(z, dtype=np.float64))
        k = zz.shape[1]
        out = np.full((len(zz), self.classes), -np.inf)
        for c in np.flatnonzero(self.counts > 0):
            y = (zz - self.means[c]) @ self.whiteners[c]
            distance = (y**2).sum(axis=1) / self.mean_factor[c]
            out[:, c] = self.constants[c] - 0.5 * (self.dof[c] + k) * np.log1p(distance / self.dof[c])
        return out


def fit_class_densities(counts: np.ndarray, sums: np.ndarray, scatter: np.ndarray) -> ClassDensities:
    """Class densities from per-class counts (C,), sums (C, k) and raw scatter sum z z^T (C, k, k)."""
    n = np.asarray(counts, dtype=np.float64)
    k = sums.shape[1]
    seen = n > 0
    means = np.zeros_like(sums, dtype=np.float64)
    means[seen] = sums[seen] / n[seen, None]
    within = scatter - n[:, None, None] * means[:, :, None] * means[:, None, :]
    within = (within + np.swapaxes(within, 1, 2)) / 2.0
    dof = np.maximum(n - 1.0, 0.0)
    total_dof = max(float(dof.sum()), 1.0)
    pooled = oas_covariance(within.sum(axis=0) / total_dof + 1e-12 * np.eye(k), total_dof)
    nu0 = estimate_prior_dof(pooled, within, dof)
    whiteners, log_dets, t_dof = group_predictives(pooled, within, dof, nu0)
    whiteners, log_dets, t_dof = whiteners[:-1], log_dets[:-1], t_dof[:-1]  # the prior row is not a class
    mean_factor = 1.0 + 1.0 / np.maximum(n, 1.0)
    constants = _student_t_constants(t_dof, k, log_dets, mean_factor)
    return ClassDensities(
        means=means, counts=n, whiteners=whiteners, constants=constants, dof=t_dof, mean_factor=mean_factor
    )


def _student_t_constants(dof: np.ndarray, k: int, log_det: np.ndarray | float, mean_factor: np.ndarray) -> np.ndarray:
    """Log normalising constants of k-variate Student t predictives (scale widened by each class mean's own
    uncertainty, `mean_factor`)."""
    return np.asarray(
        gammaln((dof + k) / 2.0)
        - gammaln(dof / 2.0)
        - 0.5 * k * np.log(dof * np.pi)
        - 0.5 * np.asarray(log_det)
        - 0.5 * k * np.log(mean_factor)
    )


def fit_pooled_class_densities(
    counts: np.ndarray, sums: np.ndarray, scatter: np.ndarray, *, other_parameters: float = 0.0
) -> ClassDensities:
    """Class densities sharing one covariance, from per-class counts (C,), sums (C, k) and the raw scatter sum
    z z^T of all classes' lots together (k, k).

    The spread of lots within a variety comes from origin, season, field, lot and photo, which act on every
    variety alike; one covariance per variety costs k (k + 1) / 2 numbers each from tens of lots, and in the
    few dozen dimensions that tell varieties apart on photo vectors that noise outweighed the differences
    (held-out phones, simulated world: swap detection 0.60 with per-variety covariances, 0.78-0.93 shared;
    docs/scoring.md). The pooled covariance is shrunk by OAS, and the predictive is the multivariate t of a
    class mean and a covariance both estimated (dof: the pooled degrees of freedom less k - 1).
    `other_parameters`: degrees of freedom the lots also spent on effects taken out before (origin, season).
    """
    n = np.asarray(counts, dtype=np.float64)
    k = sums.shape[1]
    seen = n > 0
    means = np.zeros_like(sums, dtype=np.float64)
    means[seen] = sums[seen] / n[seen, None]
    within = scatter - np.einsum("c,ci,cj->ij", n, means, means)
    within = (within + within.T) / 2.0
    total_dof = max(float(n.sum()) - float(seen.sum()) - other_parameters, 1.0)
    # Shrunk toward a multiple of the identity, which in principal coordinates leans on the directions of
    # large variance. Shrunk as correlations instead (toward the diagonal: each direction keeps its own
    # variance) it leaned on the small ones: swap detection 0.71 against 0.83 with held-out phones on the
    # simulated world, and no better on real rice photos (docs/scoring.md).
    pooled = oas_covariance(within / total_dof + 1e-12 * np.eye(k), total_dof)
    t_dof = max(total_dof - k + 1.0, 1.0)
    scale = pooled * (total_dof / t_dof)
    cholesky = np.linalg.cholesky(scale)
    whitener = np.linalg.inv(cholesky).T  # (z - m) @ whitener has unit covariance
    log_det = 2.0 * float(np.sum(np.log(np.diag(cholesky))))
    mean_factor = 1.0 + 1.0 / np.maximum(n, 1.0)
    dof = np.full(len(n), t_dof)
    constants = _student_t_constants(dof, k, log_det, mean_factor)
    return ClassDensities(
        means=means,
        counts=n,
        whiteners=np.broadcast_to(whitener, (len(n), k, k)),
        constants=constants,
        dof=dof,
        mean_factor=mean_factor,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class VarietyModel:
    """The varieties of a species compared where the lot says it grew: each variety a class (`densities`) of
    lots from which their origin's and season's effects (`origin_effects`, `season_effects`, shared by the
    varieties) were taken out. A swap keeps the lot's true origin and season, so the varieties are compared at
    them, and the spread that origins and seasons add to every variety no longer blurs the comparison."""

    densities: ClassDensities
    origin_effects: np.ndarray  # (O, k)
    season_effects: np.ndarray  # (S, k)

    def at_declared(self, z: np.ndarray, origins: np.ndarray, seasons: np.ndarray) -> np.ndarray:
        """z (n, k) less the declared origin's and season's effects (none for one the model has not seen)."""
        out = np.array(z, dtype=np.float64, copy=True)
        for effects, index in ((self.origin_effects, origins), (self.season_effects, seasons)):
            index = np.asarray(index, dtype=np.int64).reshape(-1)
            seen = (index >= 0) & (index < len(effects))
            out[seen] -= effects[index[seen]]
        return out


#: Backfitting sweeps of the variety model's main effects (they converge in a few on a day's cells).
_VARIETY_SWEEPS = 20


def fit_variety_model(
    cell_keys: np.ndarray, cell_counts: np.ndarray, cell_sums: np.ndarray, scatter: np.ndarray, sizes: tuple[int, ...]
) -> VarietyModel | None:
    """The varieties as classes of lots with their origin and season effects, from per-cell counts (C,) and
    sums (C, k) and the raw scatter (k, k) of all lots in the variety space; None with fewer than two varieties.

    The lot means are additive (variety + origin + season), fitted by backfitting; the origin and season
    effects are shrunk toward zero by an empirical-Bayes weight (as the cells' are, `reference.cells`), so an
    origin of one lot does not absorb that lot's own deviation."""
    n_v, n_o, n_s = (int(x) for x in sizes[:3])
    keys = np.asarray(cell_keys, dtype=np.int64).reshape(-1, 3)
    counts = np.asarray(cell_counts, dtype=np.float64)
    sums = np.asarray(cell_sums, dtype=np.float64)
    terms = ((keys[:, 0], n_v, False), (keys[:, 1], n_o, True), (keys[:, 2], n_s, True))
    n_keys = [np.bincount(index, weights=counts, minlength=size) for index, size, _ in terms]
    per_variety = n_keys[0]
    if int(np.sum(per_variety > 0)) < 2:
        return None
    k = sums.shape[1]
    # Summing cells into a term's keys is a sparse product (np.add.at is ten times slower, and this runs for the
    # full model and every fold at each build, update and load).
    summers = [
        sparse.csr_matrix((np.ones(len(keys)), (index, np.arange(len(keys)))), shape=(size, len(keys)))
        for index, size, _ in terms
    ]
    effects = [np.zeros((size, k)) for _, size, _ in terms]
    variety_sums = np.asarray(summers[0] @ sums)
    seen = per_variety > 0
    within_variety = scatter - (variety_sums[seen] / per_variety[seen, None]).T @ variety_sums[seen]
    # The noise effects are weighed against: the spread within a variety (origins' and seasons' included, so they
    # are shrunk a little more than exact empirical Bayes would; re-estimated about the additive means, the
    # check flagged more false origins as false varieties and no more swaps: docs/scoring.md).
    sigma2 = max(float(np.trace(within_variety)) / (k * max(float(counts.sum()) - int(seen.sum()), 1.0)), 1e-12)
    shrinkage = [0.0, 1.0, 1.0]
    fitted = np.zeros_like(sums)  # every term's effect summed per cell, kept up to date term by term
    for sweep in range(_VARIETY_SWEEPS):
        change = 0.0
        for t, (index, size, shrunk) in enumerate(terms):
            residual = np.asarray(summers[t] @ (sums - counts[:, None] * (fitted - effects[t][index])))
            if shrunk and sweep % 5 == 0:
                shrinkage[t] = estimate_effect_shrinkage(residual, n_keys[t], np.zeros((size, k)), sigma2)
            updated = residual / np.maximum(n_keys[t] + shrinkage[t], 1e-12)[:, None]
            change = max(change, float(np.abs(updated - effects[t]).max(initial=0.0)))
            fitted += (updated - effects[t])[index]
            effects[t] = updated
        if sweep % 5 == 4 and change <= 1e-9 * np.sqrt(sigma2):
            break
    _, origin_effects, season_effects = effects
    # A shrunk effect spends n / (n + lambda) of a degree of freedom per key (its hat matrix's trace), less one
    # per term for the level the variety means already hold.
    spent = sum(max(float(np.sum(n_keys[t] / (n_keys[t] + shrinkage[t]))) - 1.0, 0.0) for t in (1, 2))
    shift = origin_effects[keys[:, 1]] + season_effects[keys[:, 2]]  # (C, k)
    adjusted_sums = np.asarray(summers[0] @ (sums - counts[:, None] * shift))
    cross = sums.T @ shift
    adjusted_scatter = scatter - cross - cross.T + (shift * counts[:, None]).T @ shift
    return VarietyModel(
        densities=fit_pooled_class_densities(per_variety, adjusted_sums, adjusted_scatter, other_parameters=spent),
        origin_effects=origin_effects,
        season_effects=season_effects,
    )


def variety_nonconformity(densities: ClassDensities, z: np.ndarray, declared: np.ndarray) -> np.ndarray:
    """(n,) how much better the best other variety explains each lot than its declared one (log ratio); NaN
    where the classes hold no lot of the declared variety (they cannot score it out of sample). `z` is read
    at the declared origin and season (`VarietyModel.at_declared`)."""
    log_density = densities.log_densities(z)
    rows = np.arange(len(log_density))
    own = log_density[rows, declared]
    others = log_density.copy()
    others[rows, declared] = -np.inf
    with np.errstate(invalid="ignore"):
        return np.where(densities.counts[declared] > 0, others.max(axis=1) - own, np.nan)
