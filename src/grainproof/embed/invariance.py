"""Device and lighting invariance learned from reference lots (numpy and scikit-learn only, no torch).

Lots of one variety, region and season photographed with different phones should embed alike; where they
do not, the difference is the phone (sensor, white balance, sharpening, JPEG) and the light. Within each such
stratum we take each phone's mean offset from the stratum's mean; the principal directions of those offsets
are the directions phones move embeddings. `transform` projects them out. It needs no device label, so an
unseen phone is handled as long as it moves embeddings along the same kind of directions (colour, sharpness,
noise) as the phones seen in the reference — which `grainproof bench invariance` measures on held-out phones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class DeviceNuisanceRemover(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Projects out the embedding directions along which phones (and their lighting) shift lots.

    Parameters
    ----------
    n_components:
        How many directions to remove: an int, or a float in (0, 1) for the share of the between-phone
        (within-stratum) variance to explain.
    max_components:
        Upper bound when `n_components` is a share.
    """

    def __init__(self, n_components: int | float = 0.9, max_components: int = 24) -> None:
        self.n_components = n_components
        self.max_components = max_components

    def fit(
        self,
        X: np.ndarray,
        devices: Sequence[Hashable] | np.ndarray | None = None,
        strata: Sequence[Hashable] | np.ndarray | None = None,
    ) -> DeviceNuisanceRemover:
        """Learn the nuisance directions from lot vectors X (n, d), their phones and strata (variety/region/season).

        Without two phones in any stratum there is nothing to learn: no direction is removed.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array of lot vectors, got shape {X.shape}")
        n, dim = X.shape
        # Plain lists: strata are often tuples (species, variety, region, season), which numpy would split.
        device_list = list(devices) if devices is not None else ["?"] * n
        strata_list = list(strata) if strata is not None else ["all"] * n
        if len(device_list) != n or len(strata_list) != n:
            raise ValueError(f"devices ({len(device_list)}) and strata ({len(strata_list)}) must match X ({n} rows)")
        if not (isinstance(self.n_components, int | float) and self.n_components > 0):
            raise ValueError(f"n_components must be a positive int or a share in (0, 1), got {self.n_components!r}")
        self.mean_ = X.mean(axis=0) if n else np.zeros(dim)
        self.n_features_in_ = dim
        offsets = self._device_offsets(X, device_list, strata_list)
        if len(offsets) == 0:
            self.components_ = np.zeros((0, dim))
            self.explained_variance_ratio_ = np.zeros(0)
            self.n_components_ = 0
            return self
        _, singular, vt = np.linalg.svd(offsets, full_matrices=False)
        variance = singular**2
        ratio = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
        rank = int(np.sum(singular > singular[0] * 1e-9)) if len(singular) else 0
        if isinstance(self.n_components, float) and self.n_components < 1.0:
            k = int(np.searchsorted(np.cumsum(ratio), self.n_components) + 1)
            k = min(k, self.max_components)
        else:
            k = int(self.n_components)
        k = max(0, min(k, rank))
        self.components_ = vt[:k]
        self.explained_variance_ratio_ = ratio[:k]
        self.n_components_ = k
        return self

    @staticmethod
    def _device_offsets(X: np.ndarray, devices: list[Hashable], strata: list[Hashable]) -> np.ndarray:
        """Each (stratum, phone) mean minus the stratum's mean of phone means, weighted by sqrt(lot count)."""
        groups: dict[Hashable, dict[Hashable, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (stratum, device) in enumerate(zip(strata, devices, strict=True)):
            groups[stratum][device].append(index)
        rows: list[np.ndarray] = []
        # Sorted so the fitted directions do not depend on row order.
        for stratum in sorted(groups, key=repr):
            by_device = groups[stratum]
            if len(by_device) < 2:
                continue
            names = sorted(by_device, key=repr)
            means = np.stack([X[by_device[d]].mean(axis=0) for d in names])
            centre = means.mean(axis=0)
            weights = np.sqrt([len(by_device[d]) for d in names])
            rows.extend((means - centre) * weights[:, None])
        return np.stack(rows) if rows else np.zeros((0, X.shape[1]))

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X with the nuisance directions projected out (no device label needed: works for unseen phones)."""
        check_is_fitted(self, "components_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have shape (n, {self.n_features_in_}), got {X.shape}")
        if self.n_components_ == 0:
            return X.copy()
        centred = X - self.mean_
        return X - (centred @ self.components_.T) @ self.components_
