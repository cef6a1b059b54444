"""The reduced space a species is scored in: nuisance removal, standardisation and PCA as one affine map.

Everything before the cell densities is linear, so it is folded into one matrix and one offset,
`z = x @ weights + offset`: scoring a lot is a single matrix product, and the artefact stays plain
numpy (no pickled estimators).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from grainproof.domain import measured_feature_count
from grainproof.errors import ModelError
from grainproof.measurement_layout import (
    MEASURED_WITH_CARD,
    fill_missing_measurements,
    measured_means,
    measurement_strata,
)
from grainproof.measurement_layout import MEASURED_WITHOUT_CARD as MEASURED_WITHOUT_CARD
from grainproof.measurement_layout import NETWORK_ONLY as NETWORK_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class ReducedSpace:
    """Affine map from a raw embedding (d,) to the reduced space (k,) of one species."""

    weights: np.ndarray  # (d, k)
    offset: np.ndarray  # (k,)
    explained_variance_ratio: np.ndarray  # (k,)
    #: Reference mean (m,) of the leading kernel measurements: a vector lacking a group of them (none of its
    #: photos could be measured, or none showed the card; grainproof.measurement_layout) takes these instead,
    #: so the missing evidence counts for nothing either way rather than as a lot of zero-sized kernels.
    measured_fill: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.offset.shape != (self.weights.shape[1],):
            raise ModelError("Reduced space arrays have inconsistent shapes; rebuild the reference model.")

    @property
    def input_dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    def calibration_strata(self, vectors: np.ndarray) -> np.ndarray:
        """(n,) int8 calibration stratum of raw vectors (`measurement_layout.measurement_strata`): MEASURED with
        the card, MEASURED_WITHOUT_CARD, or NETWORK_ONLY where the photos could not be measured.

        The kinds of lot differ in how far genuine lots stray from their cell (the network block alone is
        noisier, uncalibrated measurements noisier than calibrated ones), so each is calibrated against its own
        kind: a measured lot's p-value is not diluted by the wider scores of others, nor an unmeasured lot
        flagged for being one.
        """
        return measurement_strata(vectors, len(self.measured_fill))

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Reduced coordinates (n, k) of raw vectors (n, d), in float64."""
        x = fill_missing_measurements(vectors, self.measured_fill)
        return x @ self.weights + self.offset

    def leading(self, dims: int) -> ReducedSpace:
        """The same map kept to its first `dims` coordinates (views, no copy): purity's kernel classes live there."""
        return ReducedSpace(
            weights=self.weights[:, :dims],
            offset=self.offset[:dims],
            explained_variance_ratio=self.explained_variance_ratio[:dims],
            measured_fill=self.measured_fill,
        )


#: Calibration strata (`ReducedSpace.calibration_strata`), defined in grainproof.measurement_layout.
#: MEASURED (with the card), MEASURED_WITHOUT_CARD and NETWORK_ONLY are imported from here by the scoring core.
MEASURED = MEASURED_WITH_CARD


def feature_blocks(backbone_id: str | None, dim: int) -> tuple[int, ...]:
    """Blocks of equal weight for vectors from this backbone id: each leading kernel measurement alone, then
    the network's features together (on the simulated world the network block, given half the weight, still
    pulled detection back to chance); () when the vectors carry no measurements."""
    measured = measured_feature_count(backbone_id)
    return (1,) * measured + (dim - measured,) if 0 < measured < dim else ()


def block_scale(blocks: Sequence[int]) -> np.ndarray:
    """Per-column factor on top of a column's SD so that every block holds the same total variance."""
    return np.repeat(np.sqrt(np.asarray(blocks, dtype=np.float64)), blocks)


def affine_map_of(
    transform: Callable[[np.ndarray], np.ndarray], dim: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with transform(X) == X @ A + b, found by probing; ModelError if the transform is not affine.

    The nuisance remover is linear (it projects out directions), so probing it with the identity
    recovers it exactly; the check on random points guards against a remover that is not.
    """
    offset = np.asarray(transform(np.zeros((1, dim))), dtype=np.float64)[0]
    matrix = np.asarray(transform(np.eye(dim)), dtype=np.float64) - offset
    probe = np.random.default_rng(seed).normal(size=(8, dim))
    expected = np.asarray(transform(probe), dtype=np.float64)
    if not np.allclose(probe @ matrix + offset, expected, rtol=1e-6, atol=1e-6 * (1.0 + np.abs(expected).max())):
        raise ModelError("The device nuisance remover is not an affine map, so it cannot be folded into the model.")
    return matrix, offset


def choose_dimension(
    explained_ratio: np.ndarray, *, variance_kept: float, max_components: int, max_by_lots: int
) -> int:
    """Smallest number of components keeping `variance_kept` of the variance, within the caps.

    The cap by lots keeps the covariances well estimated (several lots per dimension).
    """
    cumulative = np.cumsum(explained_ratio)
    by_variance = int(np.searchsorted(cumulative, variance_kept - 1e-12) + 1)
    rank = int(np.sum(explained_ratio > 1e-10))
    return max(1, min(by_variance, max_components, max_by_lots, rank))


def fit_reduced_space(
    vectors: np.ndarray,
    *,
    nuisance: tuple[np.ndarray, np.ndarray] | None = None,
    variance_kept: float = 1.0,
    max_components: int = 64,
    max_by_lots: int | None = None,
    blocks: Sequence[int] = (),
    measured: int = 0,
    cells: np.ndarray | None = None,
    phones: np.ndarray | None = None,
) -> ReducedSpace:
    """Fit standardisation + a basis on (a sample of) a species' reference vectors, after the nuisance map.

    By default (`variance_kept` 1) every principal direction the caps allow is kept: when the features fit
    within the caps the space is the whole standardised space, rotated, nothing dropped, because a direction
    of small variance can be the one that separates two origins. The caps (by lots, and `max_components`)
    keep the covariances estimable when there are more features than lots can support.
    `blocks` (sizes summing to the dimension) are groups of features that each get the same total weight
    before PCA: a dozen kernel measurements beside 1,280 network features would otherwise hold 1 % of
    the variance and be dropped with the noise, though they carry most of the origin signal.
    `measured` leading features are kernel measurements: lots lacking a group of them (unmeasurable photos,
    or no card) take the reference mean instead, here and in `transform`.
    `cells` (one label per lot), when the space must be cut, weight each feature by how well it separates
    the cells (`separation_weights`): PCA alone ranks directions by variance, and on embeddings the few
    features that tell origins or varieties apart (a dozen kernel measurements beside 1,280 network
    features) hold too little of it to survive the cut. On the rice photos, open set, detection went from
    0.19 to 0.80 at false alarm 0.03 (docs/scoring.md).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ModelError("A species needs at least two reference lots to fit its reduced space.")
    dim = x.shape[1]
    fill = np.zeros(0)
    if measured:
        fill = measured_means(x, measured)
        x = fill_missing_measurements(x, fill)
    if nuisance is not None:
        a_matrix, b_offset = nuisance
        x = x @ a_matrix + b_offset
    else:
        a_matrix, b_offset = np.eye(dim), np.zeros(dim)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    # Constant features carry nothing; give them unit scale so they vanish in PCA instead of dividing by 0.
    scale = np.where(scale > 1e-12 * max(float(scale.max()), 1e-300), scale, 1.0)
    if blocks:
        if sum(blocks) != dim or min(blocks) < 1:
            raise ModelError(f"Feature blocks {tuple(blocks)} do not add up to the {dim} features.")
        # Each block's standardised columns share a total variance of 1.
        scale = scale * block_scale(blocks)
    standard = (x - mean) / scale
    n = standard.shape[0]
    if cells is not None and min(max_by_lots or max_components, max_components) < dim:
        # The space must be cut: features that separate the cells go first (supervised PCA, in its soft form).
        weight = separation_weights(standard, np.asarray(cells), phones)
        scale = scale / weight
        standard = standard * weight
    # Work in coordinates of the data's own span: all of it when n > dim, else the n - 1 directions it has.
    if n <= dim:
        _, singular, components_t = np.linalg.svd(standard, full_matrices=False)
        variances = singular**2 / max(n - 1, 1)
        components = components_t.T
    else:
        variances, components = np.linalg.eigh(standard.T @ standard / (n - 1))
        order = np.argsort(variances)[::-1]
        variances, components = np.clip(variances[order], 0.0, None), components[:, order]
    ratio = variances / max(float(variances.sum()), 1e-300)
    k = choose_dimension(
        ratio, variance_kept=variance_kept, max_components=max_components, max_by_lots=max_by_lots or max_components
    )
    basis = components[:, :k]
    # Fix each component's sign so the same data always gives the same coordinates.
    signs = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(basis.shape[1])])
    basis = basis * np.where(signs == 0, 1.0, signs)
    weights = (a_matrix / scale) @ basis
    offset = ((b_offset - mean) / scale) @ basis
    return ReducedSpace(weights=weights, offset=offset, explained_variance_ratio=ratio[:k].copy(), measured_fill=fill)


#: Family-wise level at which a feature's separation of the cells counts (`separation_weights`).
SEPARATION_LEVEL = 0.05


def separation_weights(standard: np.ndarray, cells: np.ndarray, phones: np.ndarray | None = None) -> np.ndarray:
    """Per-feature weight: F, the feature's between-cell over within-cell mean square (cells compared only
    with cells photographed by the same phone), where F is significant family-wise; else 1.

    Weighting the standardised features by how well each one alone separates the reference cells, before
    PCA, is supervised principal components in its soft form (Bair, Hastie, Paul & Tibshirani 2006: screen
    features by a univariate score, then take principal components): one number per feature, so it adds
    little that can over-fit, yet PCA's cut no longer drops the few features that tell cells apart when
    hundreds of others hold the variance. Where a cell's lots come from few phones, a feature that tells
    phones apart would also tell those cells apart and be up-weighted, and an unseen phone would then look
    like a new origin (false alarm 0.14 with whole phones held out on the simulated world): so the cells'
    means are taken about their phone's mean, and a feature earns weight only for separating cells that one
    phone photographed. Features that separate nothing keep weight 1: a lot unlike every cell can still
    stand out along them.
    """
    cell_labels = np.unique(cells, return_inverse=True)[1].reshape(-1)
    phone_labels = (
        np.zeros(len(cell_labels), dtype=np.int64)
        if phones is None
        else np.unique(np.asarray(phones), return_inverse=True)[1].reshape(-1)
    )
    n_cell_labels = int(cell_labels.max()) + 1
    groups, group_of = np.unique(phone_labels * n_cell_labels + cell_labels, return_inverse=True)
    group_of = group_of.reshape(-1)
    phone_of_group = groups // n_cell_labels
    n, n_groups, n_phones = standard.shape[0], len(groups), len(np.unique(phone_of_group))
    if n_groups - n_phones < 1 or 2 * (n - n_groups) < n:
        # Under two lots per (phone, cell) on average the within-cell spread, F's denominator, is not
        # measured: no feature is up-weighted (plain PCA).
        return np.ones(standard.shape[1])
    counts = np.bincount(group_of, minlength=n_groups).astype(float)
    means = np.zeros((n_groups, standard.shape[1]))
    np.add.at(means, group_of, standard)
    means /= counts[:, None]
    within = ((standard - means[group_of]) ** 2).sum(axis=0) / (n - n_groups)
    phone_sums = np.zeros((int(phone_of_group.max()) + 1, standard.shape[1]))
    np.add.at(phone_sums, phone_of_group, means * counts[:, None])
    phone_counts = np.bincount(phone_of_group, weights=counts)
    phone_means = phone_sums / np.maximum(phone_counts, 1.0)[:, None]
    between = (counts[:, None] * (means - phone_means[phone_of_group]) ** 2).sum(axis=0) / (n_groups - n_phones)
    f = between / np.maximum(within, 1e-6)  # standardised features: a within variance of 1e-6 is none
    # Only a feature whose F clears the family-wise 5 % level over all features is up-weighted: among a
    # thousand features of thin cells, the largest F by chance alone is several times 1.
    critical = float(stats.f.isf(SEPARATION_LEVEL / standard.shape[1], n_groups - n_phones, n - n_groups))
    return np.where(f > critical, f, 1.0)


def oas_covariance(covariance: np.ndarray, n_samples: float) -> np.ndarray:
    """Oracle Approximating Shrinkage toward a scaled identity (Chen et al. 2010), from a covariance alone."""
    k = covariance.shape[0]
    mu = float(np.trace(covariance)) / k
    alpha = float(np.mean(covariance**2))
    num = alpha + mu**2
    den = (n_samples + 1.0) * (alpha - mu**2 / k)
    shrinkage = 1.0 if den <= 0 else min(num / den, 1.0)
    return (1.0 - shrinkage) * covariance + shrinkage * mu * np.eye(k)


def significant_nuisance_directions(
    vectors: np.ndarray, devices: Sequence[str], strata: Sequence[str], directions: np.ndarray
) -> int:
    """How many leading nuisance directions carry more between-phone spread than noise alone would.

    Under no phone effect, each (stratum, phone) mean's offset from its stratum, scaled by sqrt(lots),
    varies along a direction like one lot does (the within-group variance); the leading directions of
    m such offsets in d dimensions are still inflated by up to (1 + sqrt(d/m))^2 (Marchenko-Pastur edge).
    A direction is kept only above that, so a world without phone effects loses no signal.
    """
    x = np.asarray(vectors, dtype=np.float64)
    keys = [f"{s}\x00{d}" for s, d in zip(strata, devices, strict=True)]
    _, group = np.unique(np.asarray(keys), return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 0
    counts = np.bincount(group, minlength=n_groups).astype(float)
    sums = np.zeros((n_groups, x.shape[1]))
    np.add.at(sums, group, x)
    means = sums / np.maximum(counts, 1.0)[:, None]
    dof = len(x) - n_groups
    if dof < 2 or not len(directions):
        return 0
    residual = x - means[group]
    _, stratum_of = np.unique(np.asarray(list(strata)), return_inverse=True)
    group_stratum = np.zeros(n_groups, dtype=int)
    group_stratum[group] = stratum_of
    offsets = []
    for s in np.unique(group_stratum):
        members = np.flatnonzero(group_stratum == s)
        if len(members) < 2:
            continue
        centre = means[members].mean(axis=0)
        offsets.append((means[members] - centre) * np.sqrt(counts[members])[:, None])
    if not offsets:
        return 0
    rows = np.vstack(offsets)
    edge = (1.0 + np.sqrt(min(x.shape[1], len(x)) / len(rows))) ** 2
    kept = 0
    for direction in np.atleast_2d(directions):
        unit = direction / max(float(np.linalg.norm(direction)), 1e-300)
        noise = float(np.sum((residual @ unit) ** 2)) / dof
        spread = float(np.mean((rows @ unit) ** 2))
        if spread <= noise * edge:
            break
        kept += 1
    return kept
