"""Conformal p-values and batch false-discovery control."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def conformal_p_value(calibration_sorted: np.ndarray, score: float | np.ndarray) -> np.ndarray:
    """p = (1 + #{calibration >= score}) / (n + 1), from ascending calibration scores of genuine lots.

    If the lot and the calibration lots are exchangeable, P(p <= alpha) <= alpha for every alpha:
    that is what makes the flag rate at alpha mean what it says.
    """
    cal = np.asarray(calibration_sorted, dtype=np.float64)
    scores = np.asarray(score, dtype=np.float64)
    at_least = len(cal) - np.searchsorted(cal, scores, side="left")
    return np.asarray((1.0 + at_least) / (len(cal) + 1.0))


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray, fdr: float) -> np.ndarray:
    """Which lots of a batch to flag so that the expected share of false flags is at most `fdr` (BH step-up)."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if not 0.0 < fdr < 1.0:
        raise ValueError(f"fdr={fdr} must lie strictly between 0 and 1")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be finite numbers in [0, 1]")
    n = len(p)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    thresholds = fdr * np.arange(1, n + 1) / n
    below = np.flatnonzero(p[order] <= thresholds)
    flags = np.zeros(n, dtype=bool)
    if len(below):
        flags[order[: below[-1] + 1]] = True
    return flags
