"""Conformal p-values and batch false-discovery control."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def conformal_p_values(
    calibration_parts: Sequence[np.ndarray], scores: float | np.ndarray, *, among_them: bool = False
) -> np.ndarray:
    """Conformal p-values of `scores` (larger = less like a genuine lot), ranked among the genuine calibration
    scores given as ascending arrays (one per cross-conformal fold, or one for all), interpolated within a rank.

    The rank p-value (1 + #{calibration >= score}) / (n + 1) is valid (P(p <= alpha) <= alpha) but moves in
    steps of 1 / (n + 1), so at an alpha between two steps it flags genuine lots at the step below alpha, not
    at alpha, and false ones as rarely: with 38 calibration lots, p <= 0.05 meant scoring above every one of
    them. Here a score lying between two neighbouring calibration scores takes the step's share in proportion to
    where it lies, (#{calibration > score} + u) / (n + 1) with u = (above - score) / (above - below): the p-value
    falls continuously from one step to the next as the score grows (monotone, deterministic), equals the rank
    p-value just above a calibration score, and stays at 1 / (n + 1) above the largest (no tail is invented).
    Each step still holds exactly 1 / (n + 1) of genuine lots, so P(p <= alpha) is alpha at every step and
    within a step's share in between, exactly alpha where scores are spread evenly between their neighbours;
    the tests measure it at several alphas. Ties with calibration scores take the whole step (the smaller end).

    `among_them`: each score is itself one of the calibration scores (a calibration lot ranked among the
    others of its group); it is left out of its own count.
    """
    if np.ndim(scores) == 0:
        return np.array([_one_p_value(calibration_parts, float(scores), among_them)])
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = sum(len(part) for part in calibration_parts) - (1 if among_them else 0)
    greater = np.zeros(len(values))
    ties = np.full(len(values), -1.0 if among_them else 0.0)
    below = np.full(len(values), -np.inf)
    above = np.full(len(values), np.inf)
    for part in calibration_parts:
        if len(part) == 0:
            continue
        left = np.searchsorted(part, values, side="left")
        right = np.searchsorted(part, values, side="right")
        greater += len(part) - right
        ties += right - left
        below = np.where(left > 0, np.maximum(below, part[np.maximum(left - 1, 0)]), below)
        above = np.where(right < len(part), np.minimum(above, part[np.minimum(right, len(part) - 1)]), above)
    between = np.isfinite(below) & np.isfinite(above) & (above > below) & (ties == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(between, np.clip((above - values) / (above - below), 0.0, 1.0), 1.0)
    return np.asarray((greater + np.where(ties > 0, ties, share)) / (n + 1.0))


def _one_p_value(calibration_parts: Sequence[np.ndarray], score: float, among_them: bool) -> float:
    """`conformal_p_values` of one score, in Python scalars: a claim's dozen p-values are the hot path of a
    verdict, and numpy's per-call overhead on one-element arrays cost eight times the binary searches."""
    n = -1 if among_them else 0
    greater, ties = 0, -1 if among_them else 0
    below, above = -math.inf, math.inf
    for part in calibration_parts:
        size = len(part)
        if size == 0:
            continue
        n += size
        left = right = int(part.searchsorted(score))
        while right < size and part[right] == score:  # ties are rare: one comparison, not a second search
            right += 1
        greater += size - right
        ties += right - left
        if left > 0:
            below = max(below, float(part[left - 1]))
        if right < size:
            above = min(above, float(part[right]))
    if ties > 0:
        return (greater + ties) / (n + 1.0)
    share = 1.0
    if math.isfinite(below) and math.isfinite(above) and above > below:
        share = min(1.0, max(0.0, (above - score) / (above - below)))
    return (greater + share) / (n + 1.0)


def conformal_p_value(calibration_sorted: np.ndarray, score: float | np.ndarray) -> np.ndarray:
    """`conformal_p_values` among one ascending array of genuine calibration scores, shaped like `score`."""
    return conformal_p_values([np.asarray(calibration_sorted, dtype=np.float64)], score).reshape(np.shape(score))


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
