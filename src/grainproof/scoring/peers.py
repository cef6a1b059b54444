"""Peer methods scored in the same evaluation harness as ours, each giving a nonconformity per claim.

Closed-world classifiers (LDA, random forest) score a claim by how little posterior they give the
declared cell; one-class Mahalanobis per cell and k-nearest-neighbour distance score it by how far the
lot is from the declared cell's own reference lots. None of them shrinks thin cells toward their
neighbours, models what lies outside the reference, or calibrates itself: the harness calibrates each
by split conformal so that false-alarm rates compare fairly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from grainproof.reference.space import oas_covariance

#: Score given to a claim for a cell the peer never saw: the most suspicious possible.
UNSEEN = np.inf


class PeerScorer(Protocol):
    """A peer: fit on reference lots and their cell labels, then a nonconformity for lots and declared cells."""

    name: str

    def fit(self, z: np.ndarray, cells: Sequence[str]) -> PeerScorer: ...

    def nonconformity(self, z: np.ndarray, cells: Sequence[str]) -> np.ndarray: ...


class _ClassifierPeer:
    name = "classifier"

    def __init__(self) -> None:
        self.classes_: dict[str, int] = {}

    def _make(self) -> object:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(self, z: np.ndarray, cells: Sequence[str]) -> _ClassifierPeer:
        self.estimator_ = self._make()
        with warnings.catch_warnings():
            # Many cells with few lots each is this harness's normal case, not a regression problem.
            warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
            # Cells with a single reference lot are normal here; LDA's shrinkage estimate warns about each one.
            warnings.filterwarnings("ignore", message="Only one sample available", category=UserWarning)
            self.estimator_.fit(z, list(cells))  # type: ignore[attr-defined]
        self.classes_ = {str(c): i for i, c in enumerate(self.estimator_.classes_)}  # type: ignore[attr-defined]
        return self

    def nonconformity(self, z: np.ndarray, cells: Sequence[str]) -> np.ndarray:
        proba = self.estimator_.predict_proba(z)  # type: ignore[attr-defined]
        out = np.full(len(cells), UNSEEN)
        for i, cell in enumerate(cells):
            if cell in self.classes_:
                out[i] = -float(proba[i, self.classes_[cell]])
        return out


class LDAPeer(_ClassifierPeer):
    """Linear discriminant analysis over cells (shrunk covariance); nonconformity = -posterior of the declared cell."""

    name = "lda"

    def _make(self) -> object:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")


class RandomForestPeer(_ClassifierPeer):
    """Random forest over cells; nonconformity = -posterior of the declared cell."""

    name = "random_forest"

    def __init__(self, *, seed: int = 0, n_estimators: int = 200) -> None:
        super().__init__()
        self.seed = seed
        self.n_estimators = n_estimators

    def _make(self) -> object:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators, min_samples_leaf=2, random_state=self.seed, n_jobs=1
        )


class CellMahalanobisPeer:
    """One-class Mahalanobis per cell: each cell's own mean and (OAS-shrunk) covariance, nothing borrowed."""

    name = "cell_mahalanobis"

    def fit(self, z: np.ndarray, cells: Sequence[str]) -> CellMahalanobisPeer:
        labels = np.asarray(cells)
        self.cells_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        spread = float(np.mean(np.var(z, axis=0))) if len(z) > 1 else 1.0
        for cell in np.unique(labels):
            rows = z[labels == cell]
            mean = rows.mean(axis=0)
            if len(rows) >= 2:
                covariance = oas_covariance(np.cov(rows, rowvar=False).reshape(z.shape[1], z.shape[1]), len(rows))
            else:
                covariance = np.eye(z.shape[1]) * spread
            covariance += np.eye(z.shape[1]) * 1e-6 * max(spread, 1e-12)
            self.cells_[str(cell)] = (mean, np.linalg.inv(covariance))
        return self

    def nonconformity(self, z: np.ndarray, cells: Sequence[str]) -> np.ndarray:
        out = np.full(len(cells), UNSEEN)
        for i, cell in enumerate(cells):
            if cell in self.cells_:
                mean, precision = self.cells_[cell]
                diff = z[i] - mean
                out[i] = float(diff @ precision @ diff)
        return out


class KNNDistancePeer:
    """Mean Euclidean distance to the k nearest reference lots of the declared cell."""

    name = "knn_distance"

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def fit(self, z: np.ndarray, cells: Sequence[str]) -> KNNDistancePeer:
        labels = np.asarray(cells)
        self.cells_ = {str(c): z[labels == c] for c in np.unique(labels)}
        return self

    def nonconformity(self, z: np.ndarray, cells: Sequence[str]) -> np.ndarray:
        out = np.full(len(cells), UNSEEN)
        for i, cell in enumerate(cells):
            rows = self.cells_.get(cell)
            if rows is not None and len(rows):
                distances = np.sqrt(((rows - z[i]) ** 2).sum(1))
                out[i] = float(np.sort(distances)[: self.k].mean())
        return out


def default_peers(seed: int = 0) -> list[PeerScorer]:
    return [LDAPeer(), RandomForestPeer(seed=seed), CellMahalanobisPeer(), KNNDistancePeer()]
