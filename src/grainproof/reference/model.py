"""The reference model: per species a reduced space, cell statistics, reference lots and calibration scores.

Build it with `fit_reference_model` (arrays in), save it with `ReferenceModel.save` (one directory,
written to a temporary sibling and renamed, so a crash never leaves half a model), open it with
`ReferenceModel.load`. Only sufficient statistics are stored; the shrunk cell means are refitted
from them on load (milliseconds), which is what makes `update` a matter of adding counts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # installed with scikit-learn

from grainproof.domain import LotRecord, measured_feature_count
from grainproof.errors import ClaimError, ModelError
from grainproof.reference.calibration import CELL_COLUMNS, SCORE_COLUMNS, VARIETY
from grainproof.reference.calibration_groups import CalibrationGroups, calibration_groups
from grainproof.reference.cells import MAX_TAIL_LOTS, CellModel, CellStatistics, fit_cell_model, fit_tail_dof
from grainproof.reference.phone_scale import (
    PhoneScale,
    PhoneScaledVectors,
    apply_phone_scale,
    cell_labels,
    fit_phone_scale,
)
from grainproof.reference.runner import ChunkRunner, LocalRunner
from grainproof.reference.space import (
    MEASURED,
    MEASURED_WITHOUT_CARD,
    NETWORK_ONLY,
    ReducedSpace,
    affine_map_of,
    feature_blocks,
    fit_reduced_space,
    significant_nuisance_directions,
)
from grainproof.reference.varieties import (
    ClassDensities,
    VarietyModel,
    fit_class_densities,
    fit_variety_model,
    variety_nonconformity,
)
from grainproof.reference.vectors import (
    CHUNK_ROWS,
    ReferenceTable,
    VectorSource,
    checked_origin_units,
    fold_groups,
    fold_of_groups,
    season_value,
    table_and_vectors,
)
from grainproof.scoring.conformal import conformal_p_values

#: 3: per-origin covariances (group statistics), four nonconformity columns, calibration groups that partition.
#: 4: the variety check in a reduced space of its own (variety_* arrays), varieties sharing one covariance.
#: 5: the variety space's sums per cell (fold_variety_cell_sums): varieties compared at the declared origin and season.
#: 6: the cells made of the best-measured lots (cell_strata). A reader of 5 would pair their sums with every
#: lot's counts, so 6 is refused there; this reader loads 5 as it was (every lot in the cells).
#: 7: the cells' tails fitted to the lots (species' tail_dof). A reader of 6 would score claims with lighter tails
#: than the calibration lots were scored with, so 7 is refused there; 5 and 6 load with each group's own t.
FORMAT_VERSION = 7
READABLE_FORMATS = (5, 6, FORMAT_VERSION)
#: Every calibration stratum: the cells of a species none of whose lots was measured, and of models before format 6.
ALL_STRATA = np.array([MEASURED, MEASURED_WITHOUT_CARD, NETWORK_ONLY], dtype=np.int8)
ALL_STRATA.flags.writeable = False
MANIFEST_NAME = "manifest.json"
ARRAYS_NAME = "arrays.npz"
ProgressCallback = Callable[[int, int], None]
#: Season label of lots without a harvest date.
NO_SEASON: int | None = None


class NuisanceRemover(Protocol):
    """What the reference model needs from EMBED's DeviceNuisanceRemover (sklearn-style)."""

    def fit(self, X: np.ndarray, devices: Sequence[str], strata: Sequence[str]) -> Any: ...

    def transform(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelOptions:
    """Hyperparameters of a reference model (stored in its manifest)."""

    folds: int = 5
    #: Share of the variance the principal components keep (1: every direction the caps allow; directions that
    #: separate cells are kept first whatever their variance, see reference.space).
    variance_kept: float = 1.0
    max_components: int = 64
    #: Lots per reduced dimension at least when the features must be reduced (embeddings), so the space keeps
    #: the leading directions and not the noise of single photos (docs/scoring.md). The lots counted are those
    #: beyond the mean model's main effects (varieties + origins + seasons), not beyond its cells.
    lots_per_dimension: int = 10
    #: The same for the variety check's own space (`SpeciesReference.variety_space`): its classes, a few varieties
    #: of many lots each, share one covariance, estimated from every lot, so it affords many more dimensions
    #: than the cells' covariances; at 10 lots a dimension the space dropped most of what tells varieties apart
    #: on photo vectors (docs/scoring.md, Variety).
    variety_lots_per_dimension: int = 3
    #: The variety space's own cap. Its covariance is one for all varieties, estimated from every lot of the
    #: species, so the cut by lots above sets its size; the cells' cap (64, for per-origin covariances) silently
    #: overrode it on species of over 200 lots (simulated world, held-out phones: swaps detected 0.897 at 64
    #: dimensions, 0.904 at the ~96 the lots afford; docs/scoring.md). The cap bounds the cost at scale.
    max_variety_components: int = 128
    #: Every feature is kept, unreduced, when there are at least this many lots per feature (measurement
    #: tables, a dozen kernel traits): each is a measured quantity, and the shrunk covariances estimate well.
    lots_per_feature: int = 3
    #: Lots sampled (deterministically) to fit the reduced space and nuisance remover at scale.
    max_basis_lots: int = 20_000
    #: A calibration group (cell, or variety x origin, or variety x season) needs this many lots to be used alone.
    min_calibration: int = 50
    #: A declared cell with fewer reference lots is reported as low-confidence.
    min_cell_lots: int = 3
    #: A lot in the outer `outside_tail` of its cell's predictive counts as outside it: the level at which a
    #: lot's distance weighs as much as another cell fitting it better (reference.calibration).
    outside_tail: float = 0.02

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ModelError("Cross-conformal calibration needs at least 2 folds.")
        if self.max_components < 1 or self.max_variety_components < 1:
            raise ModelError("max_components and max_variety_components must be at least 1.")
        if self.lots_per_dimension < 1 or self.variety_lots_per_dimension < 1:
            raise ModelError("lots_per_dimension and variety_lots_per_dimension must be at least 1.")
        if not 0.0 < self.variance_kept <= 1.0:
            raise ModelError("variance_kept must lie in (0, 1].")
        if not 0.0 < self.outside_tail < 1.0:
            raise ModelError("outside_tail must lie in (0, 1).")


#: Fewest calibration lots of one stratum a species-level p-value is ranked among (p-values down to 1/21).
#: On the simulated world, unmeasured lots (18 %, ~40 a species per fold set) fell short of min_calibration
#: and were ranked among all lots: they were flagged 7 to 9 % of the time at alpha 0.05.
MIN_STRATUM_LOTS = 20


@dataclass(slots=True, kw_only=True)
class SpeciesReference:
    """Everything the model knows about one species; arrays are indexed by variety/origin/season position."""

    species: str
    varieties: list[str]
    origins: list[str]
    seasons: list[int | None]
    space: ReducedSpace
    #: The variety check's own space (standardisation and PCA like `space`, with its own cut, see
    #: ModelOptions.variety_lots_per_dimension) and, per fold, each cell's sum (F, C, kv) and the raw scatter
    #: z z^T of all the fold's lots (F, kv, kv) in it; counts come from fold_counts.
    variety_space: ReducedSpace
    fold_variety_cell_sums: np.ndarray
    fold_variety_scatter: np.ndarray
    cell_keys: np.ndarray  # (C, 3) int64: variety, origin, season indices
    cell_groups: np.ndarray  # (C,) int64: each cell's variety x origin group (a row of group_keys)
    group_keys: np.ndarray  # (G, 2) int64: variety, origin indices
    fold_counts: np.ndarray  # (F, C)
    fold_sums: np.ndarray  # (F, C, k)
    fold_scatter: np.ndarray  # (F, k, k)
    fold_group_scatter: np.ndarray  # (F, G, k, k): sum of z z^T per variety x origin group
    lot_ids: np.ndarray  # (n,) str
    lot_z: np.ndarray  # (n, k) float32, for nearest reference lots
    lot_cells: np.ndarray  # (n,) int64 index into cell_keys
    lot_folds: np.ndarray  # (n,) int64 cross-conformal fold of each lot
    lot_strata: np.ndarray  # (n,) int8 calibration stratum (reference.space: MEASURED or NETWORK_ONLY)
    #: (n, 5): joint, origin, season, inside and variety nonconformity (season NaN without dates, variety NaN
    #: for a species of one variety)
    calibration: np.ndarray
    origin_neighbours: list[list[int]]
    #: The calibration strata whose lots make the cells' statistics (fold_sums, fold_scatter, fold_group_scatter):
    #: `cell_strata()` at the build, kept by updates; None: every stratum (models saved before).
    cell_strata: np.ndarray | None = None
    #: Degrees of freedom capping the cells' Student t (`cells.fit_tail_dof`), fitted at the build on the lots'
    #: out-of-fold distances and kept by updates; infinite: each group's own t (and models saved before).
    tail_dof: float = math.inf
    #: Per variety: units (kernels) seen in reference lots, their sums and scatter in the reduced space;
    #: the kernel-level classes purity reads (empty when the reference lots came without units).
    unit_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unit_sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    unit_scatter: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    cells: CellModel | None = None
    #: One model per fold, fitted without that fold: calibration lots and new claims are scored alike.
    fold_cells: list[CellModel] = field(default_factory=list)
    #: The varieties as classes of lots at their origin and season (None with fewer than two), in full and per
    #: fold like the cells.
    variety_model: VarietyModel | None = None
    fold_variety_models: list[VarietyModel | None] = field(default_factory=list)
    #: The varieties as classes of single kernels, for purity (None without units of two varieties or more).
    unit_densities: ClassDensities | None = None
    _partitions: dict[int, CalibrationGroups] = field(default_factory=dict)
    _groups: dict[int, dict[int, list[np.ndarray]]] = field(default_factory=dict)
    _smallest: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    _whitened: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def unit_dim(self) -> int:
        """How many leading coordinates of `space` purity's kernel-level classes live in: the width of unit_sums
        (the whole space for a reference without unit statistics)."""
        return int(self.unit_sums.shape[1]) if self.unit_sums.ndim == 2 and self.unit_sums.shape[1] else self.space.dim

    @property
    def dim(self) -> int:
        return self.space.dim

    def statistics(self, exclude_fold: int | None = None) -> CellStatistics:
        fit_counts = self.cell_fit_counts
        counts, sums, scatter = fit_counts.sum(0), self.fold_sums.sum(0), self.fold_scatter.sum(0)
        group_scatter = self.fold_group_scatter.sum(0)
        if exclude_fold is not None:
            counts = counts - fit_counts[exclude_fold]
            sums = sums - self.fold_sums[exclude_fold]
            scatter = scatter - self.fold_scatter[exclude_fold]
            group_scatter = group_scatter - self.fold_group_scatter[exclude_fold]
        return CellStatistics(
            sizes=(len(self.varieties), len(self.origins), len(self.seasons)),
            cell_keys=self.cell_keys,
            counts=counts,
            sums=sums,
            scatter=scatter,
            group_scatter=group_scatter,
            group_of_cell=self.cell_groups,
        )

    @property
    def strata_in_cells(self) -> np.ndarray:
        """The calibration strata whose lots make the cells (`cell_strata`; every one for models saved before)."""
        return ALL_STRATA if self.cell_strata is None else np.asarray(self.cell_strata, dtype=np.int8)

    @property
    def cell_fit_counts(self) -> np.ndarray:
        """(F, C) lots of each fold and cell in the cells' statistics: those of `strata_in_cells`."""
        n_folds, n_cells = self.fold_counts.shape
        rows = np.isin(self.lot_strata, self.strata_in_cells)
        flat = self.lot_folds[rows] * n_cells + self.lot_cells[rows]
        return np.bincount(flat, minlength=n_folds * n_cells).reshape(n_folds, n_cells).astype(np.float64)

    def variety_statistics(self, exclude_fold: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-cell counts (C,) and sums (C, kv) and the raw scatter (kv, kv) in the variety space."""
        counts, sums, scatter = self.fold_counts, self.fold_variety_cell_sums, self.fold_variety_scatter
        if exclude_fold is not None:
            keep = np.arange(len(counts)) != exclude_fold
            counts, sums, scatter = counts[keep], sums[keep], scatter[keep]
        return counts.sum(0), sums.sum(0), scatter.sum(0)

    def fit_variety_model(self, exclude_fold: int | None = None) -> VarietyModel | None:
        sizes = (len(self.varieties), len(self.origins), len(self.seasons))
        return fit_variety_model(self.cell_keys, *self.variety_statistics(exclude_fold), sizes)

    def fit_cells(self, options: ModelOptions, exclude_fold: int | None = None) -> CellModel:
        return fit_cell_model(
            self.statistics(exclude_fold), origin_neighbours=self.origin_neighbours, tail_dof=self.tail_dof
        )

    def fit_tails(self, z: np.ndarray) -> None:
        """Fit `tail_dof` on the lots' distances to their own cells under the fold models that did not see them
        (z: every lot's coordinates, rows as lot_ids), and cap the fitted models' tails with it. Only lots of the
        strata that make the cells count (the others are filled in and spread differently), at most
        MAX_TAIL_LOTS of them, chosen by a hash of their ids so that the lots' order does not matter."""
        keys = self.cell_keys[self.lot_cells]
        sample = np.zeros(len(keys), dtype=bool)
        sample[_basis_sample(self.lot_ids.tolist(), MAX_TAIL_LOTS, 0)] = True
        sample &= np.isin(self.lot_strata, self.strata_in_cells)
        distance, dof = np.full(len(keys), np.nan), np.full(len(keys), np.nan)
        for f, fold_model in enumerate(self.fold_cells):
            rows = np.flatnonzero((self.lot_folds == f) & sample)
            if len(rows) and fold_model is not self.cells:
                distance[rows], dof[rows] = fold_model.own_distances(z[rows], keys[rows])
        self.tail_dof = fit_tail_dof(distance, dof, self.dim)
        if math.isfinite(self.tail_dof):
            assert self.cells is not None
            full = self.cells
            self.cells = full.with_tail_dof(self.tail_dof)
            self.fold_cells = [
                self.cells if model is full else model.with_tail_dof(self.tail_dof) for model in self.fold_cells
            ]

    def fit(self, options: ModelOptions) -> SpeciesReference:
        """Fit the full cell model and one per fold from the stored statistics; returns self."""
        # Small (k x k) linear algebra: BLAS threads only add contention (10x slower on a busy machine).
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit_all(options)
        self._partitions.clear()
        self._groups.clear()
        self._smallest.clear()
        self._whitened.clear()
        return self

    def _fit_all(self, options: ModelOptions) -> None:
        self.cells = self.fit_cells(options)
        self.variety_model = self.fit_variety_model()
        with_units = self.unit_counts[: len(self.varieties)] > 0 if len(self.unit_counts) else np.zeros(0, bool)
        self.unit_densities = (
            fit_class_densities(self.unit_counts, self.unit_sums, self.unit_scatter)
            if int(np.sum(with_units)) >= 2
            else None
        )
        # A fold holding (nearly) every lot leaves nothing to fit on: it falls back to the full model.
        fit_counts = self.cell_fit_counts
        left = fit_counts.sum() - fit_counts.sum(axis=1)
        folds = range(self.fold_counts.shape[0])
        self.fold_cells = [self.fit_cells(options, exclude_fold=f) if left[f] >= 2 else self.cells for f in folds]
        self.fold_variety_models = [
            self.fit_variety_model(exclude_fold=f) if left[f] >= 2 else self.variety_model for f in folds
        ]

    def variety_scores(self, fold: int, z: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """(n,) variety nonconformity of lots, coordinates z (n, kv) in the variety space, declared as cells
        `keys` (n, 3), under one fold's variety model (NaN with one variety)."""
        model = self.fold_variety_models[fold]
        if model is None or not len(z):
            return np.full(len(z), np.nan)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 3)
        return variety_nonconformity(model.densities, model.at_declared(z, keys[:, 1], keys[:, 2]), keys[:, 0])

    def partition(self, kind: int, options: ModelOptions) -> CalibrationGroups:
        """The calibration groups of one score kind (cached; they depend on the reference alone)."""
        if kind not in self._partitions:
            self._partitions[kind] = calibration_groups(
                self.lot_strata,
                self.cell_keys[self.lot_cells, 0],
                np.isfinite(self.calibration[:, kind]),
                min_lots=options.min_calibration,
                min_stratum=MIN_STRATUM_LOTS,
            )
        return self._partitions[kind]

    def calibration_scores(self, kind: int, options: ModelOptions, *, stratum: int, variety: int) -> list[np.ndarray]:
        """Per fold, sorted genuine calibration scores of a kind (JOINT, ORIGIN, SEASON or INSIDE) in the
        calibration group the declaration maps to (reference.calibration_groups)."""
        partition = self.partition(kind, options)
        group = partition.group_of(stratum, variety)
        if kind not in self._groups:
            n_folds = self.fold_counts.shape[0]
            scores = self.calibration[:, kind]
            by_group: dict[int, list[np.ndarray]] = {}
            assigned = np.flatnonzero(partition.lot_group >= 0)
            order = assigned[np.lexsort((scores[assigned], self.lot_folds[assigned], partition.lot_group[assigned]))]
            keys = np.column_stack([partition.lot_group[order], self.lot_folds[order]])
            change = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1 if len(order) else np.zeros(0, int)
            for start, stop in zip(np.r_[0, change], np.r_[change, len(order)], strict=True):
                if stop > start:
                    per_fold = by_group.setdefault(int(keys[start, 0]), [np.zeros(0) for _ in range(n_folds)])
                    per_fold[int(keys[start, 1])] = scores[order[start:stop]]
            self._groups[kind] = by_group
        empty = [np.zeros(0) for _ in range(self.fold_counts.shape[0])]
        return self._groups[kind].get(group, empty)

    def lot_p_values(self, kind: int, options: ModelOptions) -> np.ndarray:
        """(n,) each calibration lot's p-value of a kind among the other lots of its calibration group, by the
        rule a claim's is computed by (`conformal_p_values`); NaN without a finite score."""
        partition = self.partition(kind, options)
        scores = self.calibration[:, kind]
        out = np.full(len(scores), np.nan)
        for group in np.unique(partition.lot_group[partition.lot_group >= 0]).tolist():
            rows = np.flatnonzero(partition.lot_group == group)
            out[rows] = conformal_p_values([np.sort(scores[rows])], scores[rows], among_them=True)
        return out

    def smallest_check_p(self, kind: int, options: ModelOptions, *, stratum: int, variety: int) -> np.ndarray:
        """Sorted smallest check p-values (origin and season `kind`, and variety) of the genuine calibration lots
        in the group the declaration maps to: what a verdict's own smallest p-value is ranked among, so that
        running two checks flags genuine lots at alpha, not at up to twice alpha. Empty for one variety."""
        partition = self.partition(kind, options)
        if kind not in self._smallest:
            own, of_variety = self.lot_p_values(kind, options), self.lot_p_values(VARIETY, options)
            both = np.isfinite(own) & np.isfinite(of_variety) & (partition.lot_group >= 0)
            smallest = np.minimum(own, of_variety)
            self._smallest[kind] = {
                group: np.sort(smallest[both & (partition.lot_group == group)])
                for group in np.unique(partition.lot_group[both]).tolist()
            }
        return self._smallest[kind].get(partition.group_of(stratum, variety), np.zeros(0))

    def whitened_lots(self, variety: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of a variety's reference lots and their whitened coordinates (cached), for nearest lots."""
        if variety not in self._whitened:
            if self.cells is None:
                raise ModelError("The reference model is not fitted; load it with ReferenceModel.load.")
            rows = np.flatnonzero(self.cell_keys[self.lot_cells, 0] == variety)
            self._whitened[variety] = (rows, self.lot_z[rows].astype(np.float64) @ self.cells.whitener)
        return self._whitened[variety]


@dataclass(slots=True, kw_only=True)
class ReferenceModel:
    """A versioned reference model: per species reduced spaces, cell statistics and calibration scores."""

    species: dict[str, SpeciesReference]
    dim: int
    backbone_id: str | None
    options: ModelOptions
    origin_adjacency: dict[str, list[str]]
    region_set: str | None = None
    origin_units: str = "regions"
    #: With origin_units == "zones": up to 200 member points [lon, lat] per provenance zone, and how far
    #: (km) from its nearest member a declared point may lie and still be in that zone.
    zone_members: dict[str, list[list[float]]] = field(default_factory=dict)
    zone_reach_km: float = 0.0
    #: Reference lots per phone (EXIF model or the manifest's `device`): a claim photographed with a phone
    #: not in it is told so (its quirks are not in the calibration).
    phones: dict[str, int] = field(default_factory=dict)
    #: sha256 of every reference lot's photos (when the build saw them): a claim sending one of these photos
    #: is told its verdict compares it with itself.
    photo_hashes: frozenset[str] = frozenset()
    #: Per species: the scale of kernel sizes measured without the card, per phone (reference.phone_scale).
    phone_scales: dict[str, PhoneScale] = field(default_factory=dict)
    created_at: str = ""
    inputs_hash: str = ""
    version: str = ""
    path: Path | None = None

    def holds_lot(self, lot_id: str) -> bool:
        """Whether a lot of this id is one of the model's reference lots."""
        return bool(_already_present([lot_id], [ref.lot_ids for ref in self.species.values()]))

    @property
    def varieties(self) -> list[tuple[str, str]]:
        """(species, variety) pairs the model can score."""
        return sorted((s, v) for s, ref in self.species.items() for v in ref.varieties)

    def counts_per_cell(self) -> list[dict[str, Any]]:
        rows = []
        for name, ref in sorted(self.species.items()):
            counts = ref.fold_counts.sum(0)
            for (v, o, s), n in zip(ref.cell_keys, counts, strict=True):
                rows.append(
                    {
                        "species": name,
                        "variety": ref.varieties[v],
                        "origin_unit": ref.origins[o],
                        "season": ref.seasons[s],
                        "lots": round(float(n)),
                    }
                )
        return rows

    # ----- persistence -------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"photo_hashes": np.asarray(sorted(self.photo_hashes), dtype=str)}
        for i, name in enumerate(sorted(self.species)):
            ref = self.species[name]
            for key, value in (
                ("weights", ref.space.weights),
                ("offset", ref.space.offset),
                ("explained", ref.space.explained_variance_ratio),
                ("measured_fill", ref.space.measured_fill),
                ("variety_weights", ref.variety_space.weights),
                ("variety_offset", ref.variety_space.offset),
                ("variety_explained", ref.variety_space.explained_variance_ratio),
                ("variety_measured_fill", ref.variety_space.measured_fill),
                ("fold_variety_cell_sums", ref.fold_variety_cell_sums),
                ("fold_variety_scatter", ref.fold_variety_scatter),
                ("cell_keys", ref.cell_keys),
                ("cell_groups", ref.cell_groups),
                ("group_keys", ref.group_keys),
                ("fold_counts", ref.fold_counts),
                ("cell_strata", ref.strata_in_cells),
                ("fold_sums", ref.fold_sums),
                ("fold_scatter", ref.fold_scatter),
                ("fold_group_scatter", ref.fold_group_scatter),
                ("lot_ids", ref.lot_ids.astype(str)),
                ("lot_z", ref.lot_z),
                ("lot_cells", ref.lot_cells),
                ("lot_folds", ref.lot_folds),
                ("lot_strata", ref.lot_strata),
                ("calibration", ref.calibration),
                ("unit_counts", ref.unit_counts),
                ("unit_sums", ref.unit_sums),
                ("unit_scatter", ref.unit_scatter),
            ):
                arrays[f"s{i}_{key}"] = np.ascontiguousarray(value)
        return arrays

    def _manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "backbone_id": self.backbone_id,
            "dim": self.dim,
            "region_set": self.region_set,
            "origin_units": self.origin_units,
            "zones": {"members": self.zone_members, "reach_km": self.zone_reach_km},
            "phones": dict(sorted(self.phones.items())),
            "phone_scales": {name: scale.as_json() for name, scale in sorted(self.phone_scales.items())},
            "inputs_hash": self.inputs_hash,
            "options": {k: getattr(self.options, k) for k in self.options.__dataclass_fields__},
            "origin_adjacency": self.origin_adjacency,
            "species": [
                {
                    "name": name,
                    "varieties": self.species[name].varieties,
                    "origins": self.species[name].origins,
                    "seasons": self.species[name].seasons,
                    "origin_neighbours": self.species[name].origin_neighbours,
                    "reduced_dim": self.species[name].dim,
                    "variety_dim": self.species[name].variety_space.dim,
                    "reference_lots": len(self.species[name].lot_ids),
                    # JSON has no infinity: null is each group's own t.
                    "tail_dof": self.species[name].tail_dof if math.isfinite(self.species[name].tail_dof) else None,
                }
                for name in sorted(self.species)
            ],
            "counts_per_cell": self.counts_per_cell(),
        }

    def compute_version(self) -> str:
        """Content hash of the model (arrays and manifest, not the creation time): same inputs, same version."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self._manifest(), sort_keys=True).encode())
        for key, value in sorted(self._arrays().items()):
            digest.update(key.encode())
            digest.update(str(value.dtype).encode() + str(value.shape).encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model directory atomically (temporary sibling, then rename); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.version = self.compute_version()
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            arrays_path = tmp / ARRAYS_NAME
            with open(arrays_path, "wb") as handle:
                np.savez(handle, **self._arrays())  # type: ignore[arg-type]
                handle.flush()
                os.fsync(handle.fileno())
            manifest = self._manifest()
            manifest.update(
                version=self.version,
                created_at=self.created_at or datetime.now(UTC).isoformat(timespec="seconds"),
                arrays_sha256=_file_sha256(arrays_path),
            )
            with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            if target.exists():
                if not (target / MANIFEST_NAME).is_file() and any(target.iterdir()):
                    raise ModelError(f"{target} exists and is not a reference model; choose another --out directory.")
                old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceModel:
        """Open a saved model; ModelError if it is missing, corrupt or of another format."""
        directory = Path(path)
        manifest_path, arrays_path = directory / MANIFEST_NAME, directory / ARRAYS_NAME
        if not manifest_path.is_file() or not arrays_path.is_file():
            raise ModelError(
                f"{directory} is not a reference model (no {MANIFEST_NAME} / {ARRAYS_NAME}); "
                "build one with `grainproof reference build`."
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{manifest_path} is corrupt ({exc}); rebuild the reference model.") from None
        if manifest.get("format_version") not in READABLE_FORMATS:
            raise ModelError(
                f"{directory} has model format {manifest.get('format_version')!r}, this grainproof reads "
                f"{' and '.join(map(str, READABLE_FORMATS))}; rebuild the reference model."
            )
        if _file_sha256(arrays_path) != manifest.get("arrays_sha256"):
            raise ModelError(f"{arrays_path} does not match its manifest (corrupt or edited); rebuild the model.")
        try:
            with np.load(arrays_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            options = ModelOptions(**manifest["options"])
            species: dict[str, SpeciesReference] = {}
            for i, info in enumerate(manifest["species"]):
                ref = SpeciesReference(
                    species=info["name"],
                    varieties=list(info["varieties"]),
                    origins=list(info["origins"]),
                    seasons=list(info["seasons"]),
                    space=ReducedSpace(
                        weights=arrays[f"s{i}_weights"],
                        offset=arrays[f"s{i}_offset"],
                        explained_variance_ratio=arrays[f"s{i}_explained"],
                        measured_fill=arrays.get(f"s{i}_measured_fill", np.zeros(0)),
                    ),
                    variety_space=ReducedSpace(
                        weights=arrays[f"s{i}_variety_weights"],
                        offset=arrays[f"s{i}_variety_offset"],
                        explained_variance_ratio=arrays[f"s{i}_variety_explained"],
                        measured_fill=arrays[f"s{i}_variety_measured_fill"],
                    ),
                    fold_variety_cell_sums=arrays[f"s{i}_fold_variety_cell_sums"],
                    fold_variety_scatter=arrays[f"s{i}_fold_variety_scatter"],
                    cell_keys=arrays[f"s{i}_cell_keys"],
                    cell_groups=arrays[f"s{i}_cell_groups"],
                    group_keys=arrays[f"s{i}_group_keys"],
                    fold_counts=arrays[f"s{i}_fold_counts"],
                    cell_strata=arrays.get(f"s{i}_cell_strata"),
                    fold_sums=arrays[f"s{i}_fold_sums"],
                    fold_scatter=arrays[f"s{i}_fold_scatter"],
                    fold_group_scatter=arrays[f"s{i}_fold_group_scatter"],
                    lot_ids=arrays[f"s{i}_lot_ids"],
                    lot_z=arrays[f"s{i}_lot_z"],
                    lot_cells=arrays[f"s{i}_lot_cells"],
                    lot_folds=arrays[f"s{i}_lot_folds"],
                    lot_strata=arrays[f"s{i}_lot_strata"],
                    calibration=arrays[f"s{i}_calibration"],
                    origin_neighbours=[list(nb) for nb in info["origin_neighbours"]],
                    tail_dof=math.inf if info.get("tail_dof") is None else float(info["tail_dof"]),
                    unit_counts=arrays[f"s{i}_unit_counts"],
                    unit_sums=arrays[f"s{i}_unit_sums"],
                    unit_scatter=arrays[f"s{i}_unit_scatter"],
                )
                species[ref.species] = ref.fit(options)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory} is incomplete or corrupt ({exc}); rebuild the reference model.") from None
        model = cls(
            species=species,
            dim=int(manifest["dim"]),
            backbone_id=manifest.get("backbone_id"),
            options=options,
            origin_adjacency={k: list(v) for k, v in manifest.get("origin_adjacency", {}).items()},
            region_set=manifest.get("region_set"),
            origin_units=manifest.get("origin_units", "regions"),
            zone_members={k: [list(p) for p in v] for k, v in manifest.get("zones", {}).get("members", {}).items()},
            zone_reach_km=float(manifest.get("zones", {}).get("reach_km", 0.0)),
            phones={str(k): int(v) for k, v in manifest.get("phones", {}).items()},
            photo_hashes=frozenset(str(h) for h in arrays.get("photo_hashes", np.zeros(0, dtype=str)).tolist()),
            phone_scales={k: PhoneScale.from_json(v) for k, v in manifest.get("phone_scales", {}).items()},
            created_at=manifest.get("created_at", ""),
            inputs_hash=manifest.get("inputs_hash", ""),
            version=manifest.get("version", ""),
            path=directory,
        )
        return model

    # ----- incremental update ------------------------------------------------------------------

    def update(
        self,
        new_lots: Sequence[LotRecord],
        units: Mapping[str, np.ndarray] | None = None,
        *,
        origin_units: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
    ) -> ReferenceModel:
        """A new model with `new_lots` added (the daily refresh); this one is left unchanged.

        The reduced spaces stay fixed (rebuild from scratch now and then); each new lot is first scored
        by the current model, which is a genuinely out-of-sample calibration score, then its statistics
        are added to the cells. `units` (lot_id -> raw unit vectors) add to the kernel-level variety classes.
        """
        if not new_lots:
            return self
        vectors, species_names, varieties, origins, seasons, lot_ids, group_keys = _lot_arrays(
            new_lots, origin_units, groups
        )
        if vectors.shape[1] != self.dim:
            raise ModelError(f"New lots have {vectors.shape[1]} features but the model has {self.dim}.")
        unknown = sorted(set(species_names) - set(self.species))
        if unknown:
            raise ModelError(
                f"Species {', '.join(unknown)} not in the reference model; rebuild it with these lots "
                "(`grainproof reference build`)."
            )
        duplicates = sorted(_already_present(lot_ids, [ref.lot_ids for ref in self.species.values()]))
        if duplicates:
            raise ClaimError(f"Lot(s) {', '.join(duplicates[:5])} are already in the reference model.")
        new_species: dict[str, SpeciesReference] = {}
        for name, ref in self.species.items():
            rows = [i for i, s in enumerate(species_names) if s == name]
            if not rows:
                new_species[name] = ref
                continue
            devices = [new_lots[i].device or "" for i in rows]
            scaled, _ = apply_phone_scale(
                vectors[rows], devices, [varieties[i] for i in rows], self.phone_scales.get(name)
            )
            new_species[name] = _add_lots(
                ref,
                self.options,
                self.origin_adjacency,
                z=ref.space.transform(scaled),
                variety_z=ref.variety_space.transform(scaled),
                strata=ref.space.calibration_strata(scaled),
                varieties=[varieties[i] for i in rows],
                origins=[origins[i] for i in rows],
                seasons=[seasons[i] for i in rows],
                lot_ids=[lot_ids[i] for i in rows],
                folds=[_fold_of(group_keys[i], self.options.folds) for i in rows],
                units=units or {},
            )
        digest = hashlib.sha256(self.inputs_hash.encode())
        digest.update(_inputs_digest(lot_ids, vectors).encode())
        model = replace(
            self,
            species=new_species,
            phones=_count_phones([lot.device or "" for lot in new_lots], self.phones),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            inputs_hash=digest.hexdigest()[:16],
            path=None,
        )
        model.version = model.compute_version()
        return model


def _max_dimensions(
    dim: int, spare: int, options: ModelOptions, per_dimension: int | None = None, *, measured: int = 0
) -> int:
    """How many dimensions `spare` lots afford: every feature when each has `lots_per_feature` of them (measurement
    tables), else one per `per_dimension` lots (default `lots_per_dimension`).

    `measured` leading kernel measurements are a measurement table inside an embedding: when the lots afford
    each its `lots_per_feature`, they count as the table they are, and only the lots left over are cut by
    `per_dimension` for the network features. Counted as network directions, they left the cells' space so
    few dimensions beyond them that wrong seasons were caught 0.45-0.51 of the time on the simulated worlds of
    three photos a lot, 0.55-0.58 now (docs/scoring.md, "Kernel measurements are counted as a table").
    """
    per_dimension = options.lots_per_dimension if per_dimension is None else per_dimension
    if dim * options.lots_per_feature <= spare:
        return dim
    table = measured * options.lots_per_feature
    if 0 < measured < dim and table <= spare:
        return measured + max(1, (spare - table) // per_dimension)
    return max(1, spare // per_dimension)


def unit_statistics(
    space: ReducedSpace,
    dims: int,
    units: Mapping[str, np.ndarray],
    lot_ids: Sequence[str] | np.ndarray,
    lot_varieties: np.ndarray,
    n_varieties: int,
    start: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    scale: tuple[np.ndarray, np.ndarray, PhoneScale | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per variety: count, sum and scatter of the lots' units in the reduced space's leading `dims` coordinates
    (added to `start`); `scale` (each lot's phone and variety, and the species' phone scale) puts sizes measured
    without the card on the reference's scale, as for the lot vectors."""
    k = dims
    leading = space.leading(k)
    counts, sums, scatter = np.zeros(n_varieties), np.zeros((n_varieties, k)), np.zeros((n_varieties, k, k))
    if start is not None and len(start[0]):
        old = len(start[0])
        counts[:old], sums[:old], scatter[:old] = start
    for i, (lot_id, variety) in enumerate(
        zip(np.asarray(lot_ids).tolist(), np.asarray(lot_varieties).tolist(), strict=True)
    ):
        lot_units = units.get(str(lot_id))
        if lot_units is None or not len(lot_units):
            continue
        raw = np.asarray(lot_units, dtype=np.float64)
        if scale is not None:
            phones, names, table = scale
            raw = apply_phone_scale(raw, [str(phones[i])] * len(raw), [str(names[i])] * len(raw), table)[0]
        z = leading.transform(raw)
        counts[variety] += len(z)
        sums[variety] += z.sum(axis=0)
        scatter[variety] += z.T @ z
    return counts, sums, scatter


def _count_phones(devices: Sequence[str], start: Mapping[str, int] | None = None) -> dict[str, int]:
    """Lots per named phone (unknown phones, "", are not counted), added to `start`."""
    counts = dict(start or {})
    names, seen = np.unique(np.asarray(devices, dtype=str), return_counts=True)  # one pass, even at 1M lots
    for name, n in zip(names.tolist(), seen.tolist(), strict=True):
        if name:
            counts[name] = counts.get(name, 0) + int(n)
    return dict(sorted(counts.items()))


def _already_present(lot_ids: Sequence[str], existing: Sequence[np.ndarray]) -> set[str]:
    """The ids among `lot_ids` found in `existing` id arrays; binary search when sorted (a fresh build's are)."""
    wanted = np.asarray(lot_ids, dtype=str)
    found: set[str] = set()
    for ids in existing:
        if not len(ids) or not len(wanted):
            continue
        if bool(np.all(ids[1:] >= ids[:-1])):
            at = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
            found.update(wanted[ids[at] == wanted].tolist())
        else:
            found.update(set(wanted.tolist()) & set(ids.tolist()))
    return found


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fold_of(group: str, folds: int) -> int:
    """Cross-conformal fold of a lot, from a hash of its group (field or lot): independent of input order."""
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") % folds


def _inputs_digest(lot_ids: Sequence[str], vectors: np.ndarray) -> str:
    digest = hashlib.sha256()
    order = np.argsort(np.asarray(lot_ids, dtype=str), kind="stable")
    for i in order:
        digest.update(str(lot_ids[i]).encode())
        digest.update(np.ascontiguousarray(vectors[i], dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def _lot_arrays(
    lots: Sequence[LotRecord], origin_units: Sequence[str] | None, groups: Sequence[str] | None
) -> tuple[np.ndarray, list[str], list[str], list[str], list[int | None], list[str], list[str]]:
    origin_units = checked_origin_units(lots, origin_units)
    vectors = np.asarray([lot.features for lot in lots], dtype=np.float64)
    return (
        vectors,
        [lot.claim.species for lot in lots],
        [lot.claim.variety for lot in lots],
        list(origin_units),
        [lot.claim.season for lot in lots],
        [lot.lot_id for lot in lots],
        list(groups) if groups is not None else fold_groups(lots),
    )


def _index(values: list[Any], value: Any) -> int:
    if value not in values:
        values.append(value)
    return values.index(value)


def _neighbour_lists(origins: Sequence[str], adjacency: Mapping[str, Sequence[str]]) -> list[list[int]]:
    position = {o: i for i, o in enumerate(origins)}
    return [sorted(position[n] for n in adjacency.get(o, ()) if n in position) for o in origins]


def _add_lots(
    ref: SpeciesReference,
    options: ModelOptions,
    adjacency: Mapping[str, Sequence[str]],
    *,
    z: np.ndarray,
    variety_z: np.ndarray,
    strata: np.ndarray,
    varieties: Sequence[str],
    origins: Sequence[str],
    seasons: Sequence[int | None],
    lot_ids: Sequence[str],
    folds: Sequence[int],
    units: Mapping[str, np.ndarray],
) -> SpeciesReference:
    """A copy of `ref` with new lots: scored first (calibration), then added to the cell statistics."""
    from grainproof.reference.calibration import nonconformity_for_lots

    varieties_list, origins_list, seasons_list = list(ref.varieties), list(ref.origins), list(ref.seasons)
    keys = np.array(
        [
            (_index(varieties_list, v), _index(origins_list, o), _index(seasons_list, s))
            for v, o, s in zip(varieties, origins, seasons, strict=True)
        ],
        dtype=np.int64,
    ).reshape(-1, 3)
    known = (keys[:, 0] < len(ref.varieties)) & (keys[:, 1] < len(ref.origins)) & (keys[:, 2] < len(ref.seasons))
    calibration = np.full((len(keys), SCORE_COLUMNS), np.nan)
    fold_array = np.asarray(folds, dtype=np.int64)
    for f, fold_model in enumerate(ref.fold_cells):
        rows = np.flatnonzero(known & (fold_array == f))
        if len(rows):
            calibration[rows, :CELL_COLUMNS] = nonconformity_for_lots(
                fold_model, z[rows], keys[rows], seasons=ref.seasons, outside_tail=options.outside_tail
            )
            calibration[rows, VARIETY] = ref.variety_scores(f, variety_z[rows], keys[rows])
    # Lots in a new variety, origin or season cannot be scored out-of-sample by the current model;
    # they enter the statistics but not the calibration until the next full rebuild.
    cell_index = {tuple(int(x) for x in key): i for i, key in enumerate(ref.cell_keys)}
    cell_keys = [tuple(int(x) for x in key) for key in ref.cell_keys]
    lot_cells = np.array([_index_map(cell_index, cell_keys, tuple(int(x) for x in key)) for key in keys])
    all_cell_keys = np.asarray(cell_keys, dtype=np.int64).reshape(-1, 3)
    cell_groups, group_keys = _cell_groups(all_cell_keys, ref.group_keys)
    n_cells, n_groups, k = len(cell_keys), len(group_keys), ref.dim
    fold_counts = np.zeros((options.folds, n_cells))
    fold_sums = np.zeros((options.folds, n_cells, k))
    fold_group_scatter = np.zeros((options.folds, n_groups, k, k))
    fold_counts[:, : ref.fold_counts.shape[1]] = ref.fold_counts
    fold_sums[:, : ref.fold_sums.shape[1]] = ref.fold_sums
    fold_group_scatter[:, : ref.fold_group_scatter.shape[1]] = ref.fold_group_scatter
    fold_scatter = ref.fold_scatter.copy()
    np.add.at(fold_counts, (fold_array, lot_cells), 1.0)
    # The lots of the strata that made the cells at the build enter them; the others are scored, not counted in.
    in_cells = np.isin(np.asarray(strata, dtype=np.int8), ref.strata_in_cells)
    np.add.at(fold_sums, (fold_array[in_cells], lot_cells[in_cells]), z[in_cells])
    fold_group_scatter += _group_scatter(
        z[in_cells], fold_array[in_cells], cell_groups[lot_cells[in_cells]], options.folds, n_groups
    )
    fold_variety_cell_sums = np.zeros((options.folds, n_cells, ref.variety_space.dim))
    fold_variety_cell_sums[:, : ref.fold_variety_cell_sums.shape[1]] = ref.fold_variety_cell_sums
    np.add.at(fold_variety_cell_sums, (fold_array, lot_cells), variety_z)
    fold_variety_scatter = ref.fold_variety_scatter.copy()
    for f in range(options.folds):
        rows = z[in_cells & (fold_array == f)]
        fold_scatter[f] += rows.T @ rows
        variety_rows = variety_z[fold_array == f]
        fold_variety_scatter[f] += variety_rows.T @ variety_rows
    updated = SpeciesReference(
        species=ref.species,
        varieties=varieties_list,
        origins=origins_list,
        seasons=seasons_list,
        space=ref.space,
        variety_space=ref.variety_space,
        fold_variety_cell_sums=fold_variety_cell_sums,
        fold_variety_scatter=fold_variety_scatter,
        cell_keys=all_cell_keys,
        cell_groups=cell_groups,
        group_keys=group_keys,
        fold_counts=fold_counts,
        cell_strata=ref.cell_strata,
        fold_sums=fold_sums,
        fold_scatter=fold_scatter,
        fold_group_scatter=fold_group_scatter,
        lot_ids=np.concatenate([ref.lot_ids.astype(str), np.asarray(lot_ids, dtype=str)]),
        lot_z=np.vstack([ref.lot_z, z.astype(np.float32)]),
        lot_cells=np.concatenate([ref.lot_cells, lot_cells]),
        lot_folds=np.concatenate([ref.lot_folds, fold_array]),
        lot_strata=np.concatenate([ref.lot_strata, np.asarray(strata, dtype=np.int8)]),
        calibration=np.vstack([ref.calibration, calibration]),
        origin_neighbours=_neighbour_lists(origins_list, adjacency),
        tail_dof=ref.tail_dof,
    )
    start = (ref.unit_counts, ref.unit_sums, ref.unit_scatter) if len(ref.unit_counts) else None
    updated.unit_counts, updated.unit_sums, updated.unit_scatter = unit_statistics(
        ref.space, ref.unit_dim, units, lot_ids, keys[:, 0], len(varieties_list), start=start
    )
    return updated.fit(options)


def _cell_groups(cell_keys: np.ndarray, existing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's variety x origin group (C,) and the groups' keys (G, 2); `existing` groups keep their rows."""
    keys = [tuple(int(x) for x in row) for row in (existing if existing is not None else np.zeros((0, 2)))]
    index = {key: i for i, key in enumerate(keys)}
    groups = np.array([_index_map(index, keys, (int(v), int(o))) for v, o, _ in cell_keys], dtype=np.int64)
    return groups, np.asarray(keys, dtype=np.int64).reshape(-1, 2)


def cell_strata(strata: np.ndarray, *, min_lots: int) -> np.ndarray:
    """The calibration strata whose lots make a species' cells (means and covariances), from its lots' strata.

    A lot lacking a group of kernel measurements carries the reference mean in its place
    (`fill_missing_measurements`): in the cells' statistics it would pull every cell's mean toward the
    reference's in those directions and widen the cells' spread by how far each cell lies from it, so the
    claims measured that way would be judged against blurred cells. So the cells are made of the best-measured
    lots there are enough of: lots with the card when at least `min_lots` (a calibration group's own minimum)
    have it, else every measured lot, else every lot. The others are still in the reference, scored against the
    cells and calibrated among their own kind. On the simulated worlds (docs/scoring.md, "Cells from the
    best-measured lots"): with a fifth of lots unmeasured, measured lots' far origins were caught at 0.47 with
    them in the cells and 0.58 without; with half the lots photographed without the card, card lots' far
    origins 0.21 with them in, 0.44 without.
    """
    strata = np.asarray(strata, dtype=np.int8)
    if int(np.sum(strata == MEASURED)) >= min_lots:
        return np.array([MEASURED], dtype=np.int8)
    if bool(np.any(strata != NETWORK_ONLY)):
        return np.array([MEASURED, MEASURED_WITHOUT_CARD], dtype=np.int8)
    return ALL_STRATA


def _group_scatter(z: np.ndarray, folds: np.ndarray, groups: np.ndarray, n_folds: int, n_groups: int) -> np.ndarray:
    """(F, G, k, k) sum of z z^T of the lots of each fold and variety x origin group."""
    k = z.shape[1]
    out = np.zeros((n_folds, n_groups, k, k))
    order = np.lexsort((groups, folds))
    keys = np.column_stack([folds[order], groups[order]])
    change = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1 if len(order) else np.zeros(0, dtype=int)
    for start, stop in zip(np.r_[0, change], np.r_[change, len(order)], strict=True):
        if stop > start:
            rows = z[order[start:stop]]
            out[keys[start, 0], keys[start, 1]] = rows.T @ rows
    return out


def _index_map(index: dict[tuple[int, ...], int], keys: list[tuple[int, ...]], key: tuple[int, ...]) -> int:
    if key not in index:
        index[key] = len(keys)
        keys.append(key)
    return index[key]


def fit_reference_model(
    lots: Sequence[LotRecord],
    *,
    origin_units: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    origin_adjacency: Mapping[str, Sequence[str]] | None = None,
    backbone_id: str | None = None,
    region_set: str | None = None,
    origin_unit_kind: str = "regions",
    nuisance_factory: Callable[[], NuisanceRemover] | None = None,
    options: ModelOptions | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    runner: ChunkRunner | None = None,
    units: Mapping[str, np.ndarray] | None = None,
) -> ReferenceModel:
    """Fit a reference model from lots with feature vectors (pure: arrays in, model out, nothing written).

    `origin_units` gives each lot's origin unit (default: its region code); `groups` the unit of
    cross-conformal folds (default: `fold_groups`: the phone, else the field); `nuisance_factory`
    makes a device nuisance remover, fitted per species when lots carry at least two devices.
    The result does not depend on the order of `lots`. `runner` runs the per-chunk steps elsewhere (Ray).
    """
    if not lots:
        raise ClaimError("No reference lots: a reference model needs at least two lots per species.")
    table, vectors = table_and_vectors(lots, origin_units, groups)
    return fit_reference_arrays(
        table,
        vectors,
        origin_adjacency=origin_adjacency,
        backbone_id=backbone_id,
        region_set=region_set,
        origin_unit_kind=origin_unit_kind,
        nuisance_factory=nuisance_factory,
        options=options,
        seed=seed,
        progress=progress,
        runner=runner,
        units=units,
    )


def fit_reference_arrays(
    table: ReferenceTable,
    vectors: VectorSource,
    *,
    origin_adjacency: Mapping[str, Sequence[str]] | None = None,
    backbone_id: str | None = None,
    region_set: str | None = None,
    origin_unit_kind: str = "regions",
    nuisance_factory: Callable[[], NuisanceRemover] | None = None,
    options: ModelOptions | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    runner: ChunkRunner | None = None,
    units: Mapping[str, np.ndarray] | None = None,
) -> ReferenceModel:
    """Fit a reference model from a table of labels and a source of vectors read chunk by chunk.

    `units` (lot_id -> (m, d) raw unit vectors, about one kernel each) give the kernel-level variety
    classes that purity is read from.

    The scale path behind `fit_reference_model`: raw vectors are read only for the reduced-space sample
    and then one chunk at a time, so memory grows with the reduced coordinates (k floats per lot), not
    with the raw vectors. The result does not depend on the row order.
    """
    options = options or ModelOptions()
    runner = runner or LocalRunner()
    if len(table) == 0:
        raise ClaimError("No reference lots: a reference model needs at least two lots per species.")
    if len(vectors) != len(table):
        raise ModelError(f"{len(vectors)} vectors for {len(table)} reference lots; give one vector per lot.")
    if len(np.unique(table.lot_ids)) != len(table):
        raise ClaimError("Reference lots have duplicate lot_id values; each lot must appear once.")
    adjacency = {str(k): sorted(str(x) for x in v) for k, v in (origin_adjacency or {}).items()}
    # Process lots in lot_id order so the model does not depend on the input order.
    order = np.argsort(table.lot_ids, kind="stable")
    all_folds = fold_of_groups(table.groups, options.folds)
    species_models: dict[str, SpeciesReference] = {}
    phone_scales: dict[str, PhoneScale] = {}
    names = sorted({str(s) for s in np.unique(table.species)})
    total_steps = len(names) * (options.folds + 2)
    step = 0
    inputs_digest = hashlib.sha256()
    for name in names:
        rows = order[table.species[order] == name]  # global positions, in lot_id order
        if len(rows) < 2:
            raise ClaimError(f"Species {name!r} has {len(rows)} reference lot; it needs at least two.")
        species_ids = table.lot_ids[rows]
        basis_rows = np.asarray(_basis_sample(species_ids.tolist(), options.max_basis_lots, seed), dtype=np.int64)
        basis_global = rows[basis_rows]
        read_order = np.argsort(basis_global, kind="stable")
        basis_x = np.empty((len(basis_global), vectors.dim))
        basis_x[read_order] = vectors.take(basis_global[read_order])
        # Sizes measured without the card go on a per-phone scale learned from these lots (and stored).
        basis_phones, basis_varieties = table.devices[basis_global], table.varieties[basis_global]
        basis_cells = cell_labels(basis_varieties, table.origins[basis_global], table.seasons[basis_global])
        phone_scales[name] = fit_phone_scale(
            basis_x, basis_phones, basis_varieties, cells=basis_cells, measured=measured_feature_count(backbone_id)
        )
        basis_x = apply_phone_scale(basis_x, basis_phones, basis_varieties, phone_scales[name])[0]
        nuisance = None
        species_devices = table.devices[rows]
        if nuisance_factory is not None and len({d for d in species_devices.tolist() if d}) >= 2:
            remover = nuisance_factory()
            strata = [
                f"{v}|{o}|{season_value(s)}"
                for v, o, s in zip(
                    table.varieties[basis_global].tolist(),
                    table.origins[basis_global].tolist(),
                    table.seasons[basis_global].tolist(),
                    strict=True,
                )
            ]
            nuisance = _fit_nuisance(remover, basis_x, species_devices[basis_rows].tolist(), strata, seed)
        variety_list, variety_index = np.unique(table.varieties[rows], return_inverse=True)
        origin_list, origin_index = np.unique(table.origins[rows], return_inverse=True)
        season_codes, season_index = np.unique(table.seasons[rows], return_inverse=True)
        keys = np.stack([variety_index, origin_index, season_index], axis=1).astype(np.int64)
        cell_keys, lot_cells = np.unique(keys, axis=0, return_inverse=True)
        lot_cells = lot_cells.reshape(-1)
        # The cut counts the lots beyond the mean model's main effects (variety, origin, season), not beyond the
        # cells: a cell's mean is not a free parameter but an additive, shrunk one, so thin cells (one or two lots
        # each on a day's intake) do not use up the lots (docs/scoring.md, "A space per species").
        blocks = feature_blocks(backbone_id, vectors.dim)
        measured = len(blocks) - 1 if blocks else 0
        max_by_lots = _max_dimensions(
            vectors.dim,
            len(rows) - (len(variety_list) + len(origin_list) + len(season_codes) - 2),
            options,
            measured=measured,
        )
        # Purity's kernel-level classes keep the cut by the lots beyond the cells: their intervals are parametric,
        # and wider spaces made them overconfident (genuine lots flagged 0.05 -> 0.08 on the simulated world).
        unit_dims = _max_dimensions(vectors.dim, len(rows) - len(cell_keys), options)
        space = fit_reduced_space(
            basis_x,
            nuisance=nuisance,
            variance_kept=options.variance_kept,
            max_components=options.max_components,
            max_by_lots=max_by_lots,
            blocks=blocks,
            measured=measured,
            cells=basis_cells,
            phones=basis_phones,
        )
        # The variety check's own space: plain PCA (unsupervised, so the cross-conformal calibration of the
        # reference lots stays exchangeable with new lots), cut by the lots the shared variety covariance has.
        variety_space = fit_reduced_space(
            basis_x,
            nuisance=nuisance,
            variance_kept=options.variance_kept,
            max_components=options.max_variety_components,
            max_by_lots=_max_dimensions(
                vectors.dim, len(rows) - len(variety_list), options, options.variety_lots_per_dimension
            ),
            blocks=blocks,
            measured=measured,
        )
        del basis_x
        step += 1
        if progress:
            progress(step, total_steps)
        # Chunks of consecutive lots in lot_id order (each is read in file order and put back).
        chunks = [rows[s : s + CHUNK_ROWS] for s in range(0, len(rows), CHUNK_ROWS)]
        # Both spaces in one pass over the raw vectors (same fill of missing measurements: same basis lots).
        both = ReducedSpace(
            weights=np.hstack([space.weights, variety_space.weights]),
            offset=np.concatenate([space.offset, variety_space.offset]),
            explained_variance_ratio=np.concatenate(
                [space.explained_variance_ratio, variety_space.explained_variance_ratio]
            ),
            measured_fill=space.measured_fill,
        )
        projected = runner.project(
            both, PhoneScaledVectors(vectors, table.devices, table.varieties, phone_scales[name]), chunks
        )
        z = np.empty((len(rows), both.dim))
        lot_strata = np.empty(len(rows), dtype=np.int8)
        inputs_digest.update(name.encode())
        start = 0
        for chunk, (chunk_z, chunk_strata, chunk_digest) in zip(chunks, projected, strict=True):
            z[start : start + len(chunk)] = chunk_z
            lot_strata[start : start + len(chunk)] = chunk_strata
            inputs_digest.update("\n".join(table.lot_ids[chunk].tolist()).encode())
            inputs_digest.update(chunk_digest)
            start += len(chunk)
        del projected
        z, variety_z = z[:, : space.dim], z[:, space.dim :]
        folds = all_folds[rows]
        if len(rows) >= 2 and len(np.unique(folds)) < 2:
            # Every lot of the species in one fold (one field, or one phone) leaves nothing to calibrate them
            # against: hold out lots one by one instead.
            folds = fold_of_groups(np.asarray([f"lot:{lot_id}" for lot_id in species_ids]), options.folds)
        season_list = [season_value(c) for c in season_codes]
        n_cells, k = len(cell_keys), space.dim
        fold_counts = np.zeros((options.folds, n_cells))
        np.add.at(fold_counts, (folds, lot_cells), 1.0)
        cells_from = cell_strata(lot_strata, min_lots=options.min_calibration)
        in_cells = np.isin(lot_strata, cells_from)
        fold_sums = np.zeros((options.folds, n_cells, k))
        np.add.at(fold_sums, (folds[in_cells], lot_cells[in_cells]), z[in_cells])
        fold_scatter = np.stack([_scatter(z[in_cells & (folds == f)]) for f in range(options.folds)])
        fold_variety_cell_sums = np.zeros((options.folds, n_cells, variety_space.dim))
        np.add.at(fold_variety_cell_sums, (folds, lot_cells), variety_z)
        fold_variety_scatter = np.stack([_scatter(variety_z[folds == f]) for f in range(options.folds)])
        cell_groups, group_keys = _cell_groups(cell_keys)
        ref = SpeciesReference(
            species=name,
            varieties=[str(v) for v in variety_list],
            origins=[str(o) for o in origin_list],
            seasons=season_list,
            space=space,
            variety_space=variety_space,
            fold_variety_cell_sums=fold_variety_cell_sums,
            fold_variety_scatter=fold_variety_scatter,
            cell_keys=cell_keys.astype(np.int64),
            cell_groups=cell_groups,
            group_keys=group_keys,
            fold_counts=fold_counts,
            cell_strata=cells_from,
            fold_sums=fold_sums,
            fold_scatter=fold_scatter,
            fold_group_scatter=_group_scatter(
                z[in_cells], folds[in_cells], cell_groups[lot_cells[in_cells]], options.folds, len(group_keys)
            ),
            lot_ids=species_ids,
            lot_z=z.astype(np.float32),
            lot_cells=lot_cells.astype(np.int64),
            lot_folds=folds,
            lot_strata=lot_strata,
            calibration=np.full((len(rows), SCORE_COLUMNS), np.nan),
            origin_neighbours=_neighbour_lists([str(o) for o in origin_list], adjacency),
        )
        ref.unit_counts, ref.unit_sums, ref.unit_scatter = unit_statistics(
            space,
            min(unit_dims, space.dim),
            units or {},
            species_ids,
            variety_index,
            len(variety_list),
            scale=(table.devices[rows], table.varieties[rows], phone_scales[name]),
        )
        # Cross-conformal calibration: each lot is scored by the model fitted without its fold, whose tails are
        # first fitted to how far the lots fall out of fold.
        ref.fit(options)
        ref.fit_tails(z)
        for f in range(options.folds):
            in_fold = folds == f
            if in_fold.any() and (~in_fold).sum() >= 2:
                ref.calibration[in_fold, :CELL_COLUMNS] = runner.score(
                    ref.fold_cells[f], z[in_fold], cell_keys[lot_cells[in_fold]], ref.seasons, options.outside_tail
                )
                ref.calibration[in_fold, VARIETY] = ref.variety_scores(
                    f, variety_z[in_fold], cell_keys[lot_cells[in_fold]]
                )
            step += 1
            if progress:
                progress(step, total_steps)
        del z, variety_z
        ref._partitions.clear()
        ref._groups.clear()
        ref._smallest.clear()
        species_models[name] = ref
        step += 1
        if progress:
            progress(step, total_steps)
    model = ReferenceModel(
        species=species_models,
        dim=vectors.dim,
        backbone_id=backbone_id,
        options=options,
        origin_adjacency=adjacency,
        region_set=region_set,
        origin_units=origin_unit_kind,
        phones=_count_phones(table.devices.tolist()),
        phone_scales=phone_scales,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        inputs_hash=inputs_digest.hexdigest()[:16],
    )
    model.version = model.compute_version()
    return model


#: Most phone/lighting directions the nuisance remover may take out of a species' space.
MAX_NUISANCE_DIRECTIONS = 24


def _fit_nuisance(
    remover: NuisanceRemover, x: np.ndarray, devices: list[str], strata: list[str], seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The device nuisance remover as an affine map, keeping only directions phones really move lots along.

    The remover is asked for up to MAX_NUISANCE_DIRECTIONS directions, and every leading one that stands
    above noise is kept: a minor direction a new phone may still move along is not left in.
    """
    if hasattr(remover, "set_params"):
        remover.set_params(n_components=min(MAX_NUISANCE_DIRECTIONS, x.shape[1]))
    remover.fit(x, devices, strata)
    directions = getattr(remover, "components_", None)
    if directions is not None:
        kept = significant_nuisance_directions(x, devices, strata, np.asarray(directions))
        if kept == 0:
            return None
        if kept < len(directions) and hasattr(remover, "set_params"):
            remover.set_params(n_components=kept)
            remover.fit(x, devices, strata)
    return affine_map_of(remover.transform, x.shape[1], seed=seed)


def _scatter(rows: np.ndarray) -> np.ndarray:
    """Sum of z z^T over rows: one masked copy, not two (a quarter of the time at 100k lots, measured once)."""
    return rows.T @ rows


def _basis_sample(lot_ids: Sequence[str], limit: int, seed: int) -> list[int]:
    """Positions of at most `limit` lots, chosen by a seeded hash of their ids (order-independent)."""
    if len(lot_ids) <= limit:
        return list(range(len(lot_ids)))
    ranks = sorted(range(len(lot_ids)), key=lambda i: hashlib.sha256(f"{seed}:{lot_ids[i]}".encode()).digest())
    return sorted(ranks[:limit])
