"""The reference model: per species a reduced space, cell statistics, reference lots and calibration scores.

Build it with `fit_reference_model` (arrays in), save it with `ReferenceModel.save` (one directory,
written to a temporary sibling and renamed, so a crash never leaves half a model), open it with
`ReferenceModel.load`. Only sufficient statistics are stored; the shrunk cell means are refitted
from them on load (milliseconds), which is what makes `update` a matter of adding counts.
"""

from __future__ import annotations

import hashlib
import json
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
from grainproof.reference.cells import CellModel, CellStatistics, fit_cell_model
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
    ReducedSpace,
    affine_map_of,
    feature_blocks,
    fit_reduced_space,
    significant_nuisance_directions,
)
from grainproof.reference.vectors import (
    CHUNK_ROWS,
    ReferenceTable,
    VectorSource,
    calibration_groups,
    checked_origin_units,
    fold_of_groups,
    season_value,
    table_and_vectors,
)

FORMAT_VERSION = 2
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
    variance_kept: float = 0.95
    max_components: int = 64
    #: Lots per reduced dimension at least, so the pooled covariance stays well estimated. 5 raised every AUROC
    #: of the simulated worlds (far origin 0.80 -> 0.84) but lowered the flag rate of a left-out real rice
    #: variety (15 % -> 12 % at alpha 0.05, 28 % -> 16 % at 0.1): kept at 10 (docs/scoring.md).
    lots_per_dimension: int = 10
    #: Lots sampled (deterministically) to fit the reduced space and nuisance remover at scale.
    max_basis_lots: int = 20_000
    #: A calibration group (cell, or variety x origin, or variety x season) needs this many lots to be used alone.
    min_calibration: int = 50
    #: A declared cell with fewer reference lots is reported as low-confidence.
    min_cell_lots: int = 3
    #: Prior probability that a lot comes from outside every reference cell.
    outside_prior: float = 0.02
    #: "Outside every reference" begins this many chi-square standard deviations beyond a typical genuine lot.
    outside_scale: float = 3.0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ModelError("Cross-conformal calibration needs at least 2 folds.")
        if not 0.0 < self.variance_kept <= 1.0:
            raise ModelError("variance_kept must lie in (0, 1].")
        if not 0.0 < self.outside_prior < 1.0:
            raise ModelError("outside_prior must lie in (0, 1).")


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
    cell_keys: np.ndarray  # (C, 3) int64: variety, origin, season indices
    fold_counts: np.ndarray  # (F, C)
    fold_sums: np.ndarray  # (F, C, k)
    fold_scatter: np.ndarray  # (F, k, k)
    lot_ids: np.ndarray  # (n,) str
    lot_z: np.ndarray  # (n, k) float32, for nearest reference lots
    lot_cells: np.ndarray  # (n,) int64 index into cell_keys
    lot_folds: np.ndarray  # (n,) int64 cross-conformal fold of each lot
    lot_strata: np.ndarray  # (n,) int8 calibration stratum (reference.space: MEASURED or NETWORK_ONLY)
    calibration: np.ndarray  # (n, 3): joint, origin, season nonconformity (season NaN without dates)
    origin_neighbours: list[list[int]]
    cells: CellModel | None = None
    #: One model per fold, fitted without that fold: calibration lots and new claims are scored alike.
    fold_cells: list[CellModel] = field(default_factory=list)
    _groups: dict[tuple[int, int, bool], dict[tuple[int, ...], list[np.ndarray]]] = field(default_factory=dict)
    _whitened: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: Whether lot_strata holds more than one stratum: asked on every claim, so found once (lot_strata is fixed).
    _mixed_strata: bool | None = None

    @property
    def dim(self) -> int:
        return self.space.dim

    def statistics(self, exclude_fold: int | None = None) -> CellStatistics:
        counts, sums, scatter = self.fold_counts.sum(0), self.fold_sums.sum(0), self.fold_scatter.sum(0)
        if exclude_fold is not None:
            counts = counts - self.fold_counts[exclude_fold]
            sums = sums - self.fold_sums[exclude_fold]
            scatter = scatter - self.fold_scatter[exclude_fold]
        return CellStatistics(
            sizes=(len(self.varieties), len(self.origins), len(self.seasons)),
            cell_keys=self.cell_keys,
            counts=counts,
            sums=sums,
            scatter=scatter,
        )

    def fit_cells(self, options: ModelOptions, exclude_fold: int | None = None) -> CellModel:
        return fit_cell_model(
            self.statistics(exclude_fold), origin_neighbours=self.origin_neighbours, outside_scale=options.outside_scale
        )

    def fit(self, options: ModelOptions) -> SpeciesReference:
        """Fit the full cell model and one per fold from the stored statistics; returns self."""
        # Small (k x k) linear algebra: BLAS threads only add contention (10x slower on a busy machine).
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit_all(options)
        self._groups.clear()
        self._whitened.clear()
        return self

    def _fit_all(self, options: ModelOptions) -> None:
        self.cells = self.fit_cells(options)
        # A fold holding (nearly) every lot leaves nothing to fit on: it falls back to the full model.
        left = self.fold_counts.sum() - self.fold_counts.sum(axis=1)
        self.fold_cells = [
            self.fit_cells(options, exclude_fold=f) if left[f] >= 2 else self.cells
            for f in range(self.fold_counts.shape[0])
        ]

    def calibration_scores(
        self, kind: int, key: tuple[int, ...], min_lots: int, stratum: int = MEASURED
    ) -> list[np.ndarray]:
        """Per fold, sorted genuine calibration scores of a kind (0 joint, 1 origin, 2 season), at the finest
        level with at least `min_lots` lots.

        Levels: the cell (joint), the variety x origin (origin) or variety x season (season); then the
        variety; then the species. Each is tried first among lots of the claim's calibration `stratum`
        (Mondrian conformal: measured lots are ranked among measured ones), then among all lots. At the
        species level the claim's own stratum is used from MIN_STRATUM_LOTS on: few lots give coarse
        p-values, but valid ones, where all lots would rank an unmeasured lot among tighter measured ones.
        Exchangeability holds at each level, so each gives valid p-values; which level is used depends on
        the reference alone, never on the claim's score.
        """
        variety = key[0]
        empty = [np.zeros(0) for _ in range(self.fold_counts.shape[0])]
        levels = (key, (variety,), ())
        if self._mixed_strata is None:
            self._mixed_strata = bool(len(self.lot_strata)) and bool(np.any(self.lot_strata != self.lot_strata[0]))
        if self._mixed_strata:
            for level in levels:
                groups = self._group_index(kind, len(level), stratified=True)
                scores = groups.get((int(stratum), *(int(x) for x in level)), empty)
                if sum(len(s) for s in scores) >= (min_lots if level else min(min_lots, MIN_STRATUM_LOTS)):
                    return scores
        for level in levels:
            groups = self._group_index(kind, len(level))
            scores = groups.get(tuple(int(x) for x in level), empty)
            if sum(len(s) for s in scores) >= min_lots or level == ():
                return scores
        raise AssertionError("unreachable")

    def whitened_lots(self, variety: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of a variety's reference lots and their whitened coordinates (cached), for nearest lots."""
        if variety not in self._whitened:
            if self.cells is None:
                raise ModelError("The reference model is not fitted; load it with ReferenceModel.load.")
            rows = np.flatnonzero(self.cell_keys[self.lot_cells, 0] == variety)
            self._whitened[variety] = (rows, self.lot_z[rows].astype(np.float64) @ self.cells.whitener)
        return self._whitened[variety]

    def _group_index(
        self, kind: int, depth: int, *, stratified: bool = False
    ) -> dict[tuple[int, ...], list[np.ndarray]]:
        """Per-fold sorted calibration scores of every group at one level, built once for all groups;
        `stratified` groups are keyed by (stratum, *level)."""
        cache_key = (kind, depth, stratified)
        if cache_key not in self._groups:
            n_folds = self.fold_counts.shape[0]
            columns = {0: (0, 1, 2), 1: (0, 1), 2: (0, 2)}[kind][:depth]
            level_keys = self.cell_keys[self.lot_cells][:, list(columns)]
            if stratified:
                level_keys = np.column_stack([self.lot_strata.astype(np.int64), level_keys])
                depth += 1
            keys = np.column_stack([level_keys, self.lot_folds])
            scores = self.calibration[:, kind]
            valid = np.isfinite(scores)
            keys, scores = keys[valid], scores[valid]
            groups: dict[tuple[int, ...], list[np.ndarray]] = {}
            if len(scores):
                order = np.lexsort((scores, *[keys[:, c] for c in reversed(range(depth + 1))]))
                keys, scores = keys[order], scores[order]
                change = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
                for start, stop in zip(np.r_[0, change], np.r_[change, len(scores)], strict=True):
                    group = tuple(int(x) for x in keys[start, :depth])
                    per_fold = groups.setdefault(group, [np.zeros(0) for _ in range(n_folds)])
                    per_fold[int(keys[start, depth])] = scores[start:stop]
            if depth == 0 and () not in groups:
                groups[()] = [np.zeros(0) for _ in range(n_folds)]
            self._groups[cache_key] = groups
        return self._groups[cache_key]


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
    #: Per species: the scale of kernel sizes measured without the card, per phone (reference.phone_scale).
    phone_scales: dict[str, PhoneScale] = field(default_factory=dict)
    created_at: str = ""
    inputs_hash: str = ""
    version: str = ""
    path: Path | None = None

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
        arrays: dict[str, np.ndarray] = {}
        for i, name in enumerate(sorted(self.species)):
            ref = self.species[name]
            for key, value in (
                ("weights", ref.space.weights),
                ("offset", ref.space.offset),
                ("explained", ref.space.explained_variance_ratio),
                ("measured_fill", ref.space.measured_fill),
                ("cell_keys", ref.cell_keys),
                ("fold_counts", ref.fold_counts),
                ("fold_sums", ref.fold_sums),
                ("fold_scatter", ref.fold_scatter),
                ("lot_ids", ref.lot_ids.astype(str)),
                ("lot_z", ref.lot_z),
                ("lot_cells", ref.lot_cells),
                ("lot_folds", ref.lot_folds),
                ("lot_strata", ref.lot_strata),
                ("calibration", ref.calibration),
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
                    "reference_lots": len(self.species[name].lot_ids),
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
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{directory} has model format {manifest.get('format_version')!r}, this grainproof reads "
                f"{FORMAT_VERSION}; rebuild the reference model."
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
                    cell_keys=arrays[f"s{i}_cell_keys"],
                    fold_counts=arrays[f"s{i}_fold_counts"],
                    fold_sums=arrays[f"s{i}_fold_sums"],
                    fold_scatter=arrays[f"s{i}_fold_scatter"],
                    lot_ids=arrays[f"s{i}_lot_ids"],
                    lot_z=arrays[f"s{i}_lot_z"],
                    lot_cells=arrays[f"s{i}_lot_cells"],
                    lot_folds=arrays[f"s{i}_lot_folds"],
                    lot_strata=arrays[f"s{i}_lot_strata"],
                    calibration=arrays[f"s{i}_calibration"],
                    origin_neighbours=[list(nb) for nb in info["origin_neighbours"]],
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
        are added to the cells. `units` is accepted for symmetry with the build and not needed here.
        """
        del units
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
                strata=ref.space.calibration_strata(scaled),
                varieties=[varieties[i] for i in rows],
                origins=[origins[i] for i in rows],
                seasons=[seasons[i] for i in rows],
                lot_ids=[lot_ids[i] for i in rows],
                folds=[_fold_of(group_keys[i], self.options.folds) for i in rows],
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
        list(groups) if groups is not None else calibration_groups(lots),
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
    strata: np.ndarray,
    varieties: Sequence[str],
    origins: Sequence[str],
    seasons: Sequence[int | None],
    lot_ids: Sequence[str],
    folds: Sequence[int],
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
    calibration = np.full((len(keys), 3), np.nan)
    fold_array = np.asarray(folds, dtype=np.int64)
    for f, fold_model in enumerate(ref.fold_cells):
        rows = np.flatnonzero(known & (fold_array == f))
        if len(rows):
            calibration[rows] = nonconformity_for_lots(
                fold_model, z[rows], keys[rows], seasons=ref.seasons, outside_prior=options.outside_prior
            )
    # Lots in a new variety, origin or season cannot be scored out-of-sample by the current model;
    # they enter the statistics but not the calibration until the next full rebuild.
    cell_index = {tuple(int(x) for x in key): i for i, key in enumerate(ref.cell_keys)}
    cell_keys = [tuple(int(x) for x in key) for key in ref.cell_keys]
    lot_cells = np.array([_index_map(cell_index, cell_keys, tuple(int(x) for x in key)) for key in keys])
    n_cells, k = len(cell_keys), ref.dim
    fold_counts = np.zeros((options.folds, n_cells))
    fold_sums = np.zeros((options.folds, n_cells, k))
    fold_counts[:, : ref.fold_counts.shape[1]] = ref.fold_counts
    fold_sums[:, : ref.fold_sums.shape[1]] = ref.fold_sums
    fold_scatter = ref.fold_scatter.copy()
    np.add.at(fold_counts, (fold_array, lot_cells), 1.0)
    np.add.at(fold_sums, (fold_array, lot_cells), z)
    for f in range(options.folds):
        rows = z[fold_array == f]
        fold_scatter[f] += rows.T @ rows
    updated = SpeciesReference(
        species=ref.species,
        varieties=varieties_list,
        origins=origins_list,
        seasons=seasons_list,
        space=ref.space,
        cell_keys=np.asarray(cell_keys, dtype=np.int64).reshape(-1, 3),
        fold_counts=fold_counts,
        fold_sums=fold_sums,
        fold_scatter=fold_scatter,
        lot_ids=np.concatenate([ref.lot_ids.astype(str), np.asarray(lot_ids, dtype=str)]),
        lot_z=np.vstack([ref.lot_z, z.astype(np.float32)]),
        lot_cells=np.concatenate([ref.lot_cells, lot_cells]),
        lot_folds=np.concatenate([ref.lot_folds, fold_array]),
        lot_strata=np.concatenate([ref.lot_strata, np.asarray(strata, dtype=np.int8)]),
        calibration=np.vstack([ref.calibration, calibration]),
        origin_neighbours=_neighbour_lists(origins_list, adjacency),
    )
    return updated.fit(options)


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
) -> ReferenceModel:
    """Fit a reference model from lots with feature vectors (pure: arrays in, model out, nothing written).

    `origin_units` gives each lot's origin unit (default: its region code); `groups` the unit of
    cross-conformal folds (default: `calibration_groups`: the phone, else the field); `nuisance_factory`
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
) -> ReferenceModel:
    """Fit a reference model from a table of labels and a source of vectors read chunk by chunk.

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
        max_by_lots = max(1, (len(rows) - len(cell_keys)) // options.lots_per_dimension)
        blocks = feature_blocks(backbone_id, vectors.dim)
        space = fit_reduced_space(
            basis_x,
            nuisance=nuisance,
            variance_kept=options.variance_kept,
            max_components=options.max_components,
            max_by_lots=max_by_lots,
            blocks=blocks,
            measured=len(blocks) - 1 if blocks else 0,
        )
        del basis_x
        step += 1
        if progress:
            progress(step, total_steps)
        # Chunks of consecutive lots in lot_id order (each is read in file order and put back).
        chunks = [rows[s : s + CHUNK_ROWS] for s in range(0, len(rows), CHUNK_ROWS)]
        projected = runner.project(
            space, PhoneScaledVectors(vectors, table.devices, table.varieties, phone_scales[name]), chunks
        )
        z = np.empty((len(rows), space.dim))
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
        folds = all_folds[rows]
        season_list = [season_value(c) for c in season_codes]
        n_cells, k = len(cell_keys), space.dim
        fold_counts = np.zeros((options.folds, n_cells))
        fold_sums = np.zeros((options.folds, n_cells, k))
        np.add.at(fold_counts, (folds, lot_cells), 1.0)
        np.add.at(fold_sums, (folds, lot_cells), z)
        fold_scatter = np.stack([_scatter(z[folds == f]) for f in range(options.folds)])
        ref = SpeciesReference(
            species=name,
            varieties=[str(v) for v in variety_list],
            origins=[str(o) for o in origin_list],
            seasons=season_list,
            space=space,
            cell_keys=cell_keys.astype(np.int64),
            fold_counts=fold_counts,
            fold_sums=fold_sums,
            fold_scatter=fold_scatter,
            lot_ids=species_ids,
            lot_z=z.astype(np.float32),
            lot_cells=lot_cells.astype(np.int64),
            lot_folds=folds,
            lot_strata=lot_strata,
            calibration=np.full((len(rows), 3), np.nan),
            origin_neighbours=_neighbour_lists([str(o) for o in origin_list], adjacency),
        )
        # Cross-conformal calibration: each lot is scored by the model fitted without its fold.
        ref.fit(options)
        for f in range(options.folds):
            in_fold = folds == f
            if in_fold.any() and (~in_fold).sum() >= 2:
                ref.calibration[in_fold] = runner.score(
                    ref.fold_cells[f], z[in_fold], cell_keys[lot_cells[in_fold]], ref.seasons, options.outside_prior
                )
            step += 1
            if progress:
                progress(step, total_steps)
        del z
        ref._groups.clear()
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
