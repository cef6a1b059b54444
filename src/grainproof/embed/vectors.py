"""Photo and lot embeddings as plain numpy values (no torch), shared by the embedder, the cache and scoring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grainproof.domain import measured_feature_count
from grainproof.measurement_layout import combine_photo_measurements

#: At most this many unit vectors (≈ one kernel each) per lot: enough to see a 10 % admixture, small on disk.
MAX_UNITS_PER_LOT = 64


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class PhotoEmbedding:
    """One photo's vector (d,), its per-unit vectors (m, d; a unit is a patch of about one kernel) and warnings."""

    vector: np.ndarray
    unit_vectors: np.ndarray
    content_hash: str
    warnings: tuple[str, ...] = ()
    backbone_id: str = ""

    def __post_init__(self) -> None:
        if self.vector.ndim != 1:
            raise ValueError(f"vector must be 1-D, got shape {self.vector.shape}")
        if self.unit_vectors.ndim != 2 or self.unit_vectors.shape[1] != self.vector.shape[0]:
            raise ValueError(f"unit_vectors must be (m, {self.vector.shape[0]}), got {self.unit_vectors.shape}")
        if not np.all(np.isfinite(self.vector)):
            raise ValueError("vector has NaN or infinite values")

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class LotEmbedding:
    """A lot's vector (mean of its photos; for kernel measurements the median of the photos that measured them), the
    pooled unit vectors of all its photos, and all photo warnings."""

    vector: np.ndarray
    unit_vectors: np.ndarray
    warnings: tuple[str, ...] = ()


def lot_embedding(photos: Sequence[PhotoEmbedding], *, max_units: int = MAX_UNITS_PER_LOT) -> LotEmbedding:
    """The lot's embedding from its photos; the same whatever order the photos come in.

    Photos are put in content-hash order first, so the mean (a float sum) and the choice of units kept under
    `max_units` do not depend on the order an operator uploaded them.
    """
    if not photos:
        raise ValueError("a lot needs at least one photo embedding")
    dims = {p.dim for p in photos}
    if len(dims) != 1:
        raise ValueError(f"photo embeddings have different dimensions {sorted(dims)}")
    backbones = {p.backbone_id for p in photos}
    if len(backbones) > 1:
        raise ValueError(f"photo embeddings come from different backbones {sorted(backbones)}; re-embed them")
    ordered = sorted(photos, key=lambda p: (p.content_hash, p.vector.tobytes()))
    stacked = np.stack([p.vector.astype(np.float64) for p in ordered])
    vector = stacked.mean(axis=0)
    measured = measured_feature_count(ordered[0].backbone_id)
    if measured:
        # Per group of measurements, the median of the photos that measured it: a photo that could not be
        # measured (or showed no card) does not pull the lot to zero, nor one badly segmented photo move it.
        vector[:measured] = combine_photo_measurements(stacked[:, :measured])
    units = np.concatenate([p.unit_vectors.astype(np.float32) for p in ordered], axis=0)
    if len(units) > max_units:
        # Evenly spaced over the hash-ordered photos: every photo contributes its share.
        keep = np.linspace(0, len(units) - 1, max_units).round().astype(int)
        units = units[keep]
    warnings = tuple(sorted({w for p in ordered for w in p.warnings}))
    return LotEmbedding(vector=vector.astype(np.float32), unit_vectors=units, warnings=warnings)
