"""How much of a lot is something else: the share of its units (kernels, photo patches) from a second component.

A lot's units are modelled as a two-component mixture, (1 - w) f_own + w f_other, with both component
densities given per unit. The share w is estimated by maximum likelihood, its interval is the profile
likelihood interval, and the test of w = 0 is a likelihood ratio on the boundary (half a chi-square with one
degree of freedom). The likelihood is concave in w, so a fine grid finds all of it exactly enough and the
result never depends on a starting point. Used for origin admixture and for variety purity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Grid over the share: steps of 0.001 (a lot has at most a few hundred units, far coarser than that).
_GRID = np.linspace(0.0, 1.0, 1001)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareEstimate:
    """A share in [0, 1] with its interval and the p-value of "none at all"."""

    share: float
    low: float
    high: float
    p_value: float  # likelihood-ratio test of share = 0
    units: int

    def significant(self, alpha: float) -> bool:
        """Whether the data say the share is above zero at this level."""
        return self.p_value <= alpha


def mixture_share(
    log_own: np.ndarray, log_other: np.ndarray, *, level: float = 0.95, independent: float | None = None
) -> ShareEstimate:
    """The share of units from the other component, from each unit's log density under both components.

    `independent` is how many independent observations the units amount to (default: each unit is one).
    Units cut from one photo share its light, tray and kernels: their log-likelihood is scaled down to that
    many observations (a composite likelihood), so the interval is as wide as the evidence, not the units.
    """
    a = np.asarray(log_own, dtype=np.float64).reshape(-1)
    b = np.asarray(log_other, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or not len(a):
        raise ValueError("mixture_share needs one log density per unit under each component")
    # Sums in a fixed order, so the units' order (photo order) cannot move the last digits.
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    top = np.maximum(a, b)
    own, other = np.exp(a - top), np.exp(b - top)
    with np.errstate(divide="ignore"):
        loglik = np.log(np.outer(1.0 - _GRID, own) + np.outer(_GRID, other)).sum(axis=1) + top.sum()
    if independent is not None:
        loglik = loglik * min(max(float(independent), 1.0), float(len(a))) / len(a)
    best = int(np.argmax(loglik))
    cut = loglik[best] - 0.5 * float(stats.chi2.ppf(level, 1))
    inside = np.flatnonzero(loglik >= cut)
    ratio = max(2.0 * float(loglik[best] - loglik[0]), 0.0)
    p_value = 1.0 if best == 0 else float(min(1.0, 0.5 * stats.chi2.sf(ratio, 1)))
    return ShareEstimate(
        share=float(_GRID[best]),
        low=float(_GRID[inside.min()]),
        high=float(_GRID[inside.max()]),
        p_value=p_value,
        units=len(a),
    )


def gaussian_positions_share(positions: np.ndarray, *, level: float = 0.95, iterations: int = 50) -> ShareEstimate:
    """The share of units near 1 rather than 0, for unit positions along the segment between two component
    means (0: own, 1: other) with one shared spread, estimated with the share by EM."""
    x = np.sort(np.asarray(positions, dtype=np.float64).reshape(-1))  # order-free sums
    weight = float(np.clip(x.mean(), 0.05, 0.95))
    variance = max(float(x.var()), 1e-3)
    for _ in range(iterations):
        log_a = np.log(max(1.0 - weight, 1e-12)) - 0.5 * x**2 / variance
        log_b = np.log(max(weight, 1e-12)) - 0.5 * (x - 1.0) ** 2 / variance
        top = np.maximum(log_a, log_b)
        resp = np.exp(log_b - top) / (np.exp(log_a - top) + np.exp(log_b - top))
        weight = float(resp.mean())
        variance = max(float(np.mean((1 - resp) * x**2 + resp * (x - 1.0) ** 2)), 1e-3)
    return mixture_share(-0.5 * x**2 / variance, -0.5 * (x - 1.0) ** 2 / variance, level=level)
