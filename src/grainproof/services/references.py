"""Building and refreshing reference models: the use case behind `grainproof reference build` and the API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.domain import LotRecord
from grainproof.errors import ClaimError, ModelError
from grainproof.progress import ProgressCallback
from grainproof.reference import ModelOptions, ReferenceModel, fit_reference_model
from grainproof.reference.report import uncalibrated_varieties
from grainproof.services.features import ensure_features
from grainproof.services.origins import (
    ORIGIN_UNIT_KINDS,
    claim_origin_unit,
    load_regions,
    lot_origin_units,
    zone_origin_units,
)
from grainproof.store.photos import content_hash


def device_nuisance_factory() -> Any:
    """EMBED's DeviceNuisanceRemover class when it is available (numpy only), else None."""
    import importlib

    try:
        module = importlib.import_module("grainproof.embed.invariance")
    except ImportError:
        return None
    return getattr(module, "DeviceNuisanceRemover", None)


def build_reference_model(
    lots: Sequence[LotRecord],
    out_dir: Path,
    *,
    units: Mapping[str, np.ndarray] | None = None,
    backbone_id: str | None = None,
    region_set: str | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    base_dir: Path | None = None,
    embedder: Any = None,
    options: ModelOptions | None = None,
    remove_device_nuisance: bool = True,
    runner: Any = None,
    origin_units: str = "regions",
) -> ReferenceModel:
    """Fit a reference model on lots (embedding their photos first if they have no features) and save it atomically.

    `units` (per-lot unit vectors, about one kernel each) give the kernel-level variety classes that purity
    is read from; lots whose photos are embedded here bring their own. With `region_set`, lots without a
    region code are placed by their point, and origin effects borrow strength from neighbouring regions.
    `runner` (a ChunkRunner, e.g. `grainproof.scale.ray_engine.RayRunner`) runs the per-chunk steps
    elsewhere; the model is the same.
    """
    lots, embedded_units, _, embedded_backbone = ensure_features(lots, base_dir=base_dir, embedder=embedder)
    units = {**(units or {}), **embedded_units}
    backbone_id = backbone_id or embedded_backbone or backbone_column(lots)
    if origin_units not in ORIGIN_UNIT_KINDS:
        raise ClaimError(f"Origin units {origin_units!r} are not one of {', '.join(ORIGIN_UNIT_KINDS)}.")
    regions = load_regions(region_set or ("fr-departements" if origin_units == "zones" else None))
    zones = None
    if origin_units == "zones":
        assert regions is not None
        zones = zone_origin_units(lots, regions)
        lot_units, adjacency = zones.units, zones.adjacency
    else:
        lot_units = lot_origin_units(lots, regions)
        adjacency = {code: regions.neighbours(code) for code in regions.codes} if regions is not None else {}
    factory = device_nuisance_factory() if remove_device_nuisance else None
    model = fit_reference_model(
        lots,
        origin_units=lot_units,
        origin_unit_kind=origin_units,
        origin_adjacency=adjacency,
        backbone_id=backbone_id,
        region_set=regions.name if regions is not None else None,
        nuisance_factory=factory,
        options=options,
        seed=seed,
        progress=progress,
        runner=runner,
        units=units,
    )
    if zones is not None:
        model.zone_members, model.zone_reach_km = zones.members, zones.reach_km
    model.photo_hashes = frozenset(_photo_hashes(lots, base_dir))
    problems = uncalibrated_varieties(model)
    if problems:
        # A variety without calibration would get p = 1 and "plausible" for every claim: refuse the model.
        raise ModelError("The reference model was not saved:\n" + "\n".join(f"  - {p}" for p in problems))
    model.save(out_dir)
    return model


def _photo_hashes(lots: Sequence[LotRecord], base_dir: Path | None) -> set[str]:
    """sha256 of every photo file the lots name that can be read (photos of feature manifests may be gone)."""
    root = base_dir or Path.cwd()
    hashes = set()
    for lot in lots:
        for photo in lot.photos:
            path = root / photo
            if path.is_file():
                hashes.add(content_hash(path.read_bytes()))
    return hashes


def update_reference_model(
    model: ReferenceModel, lots: Sequence[LotRecord], out_dir: Path | None = None
) -> ReferenceModel:
    """The daily refresh: add new reference lots to a model (and save it when `out_dir` is given)."""
    regions = load_regions(model.region_set)
    backbone = backbone_column(lots)
    if backbone and model.backbone_id and backbone != model.backbone_id:
        raise ModelError(
            f"The new lots were embedded with {backbone} but the model uses {model.backbone_id}; "
            "re-embed them with the model's backbone."
        )
    if model.zone_members:
        # New lots join the zone their point falls in (the zones themselves change only on a rebuild).
        lot_units = [
            claim_origin_unit(lot.claim, regions, zone_members=model.zone_members, zone_reach_km=model.zone_reach_km)[0]
            for lot in lots
        ]
    else:
        lot_units = lot_origin_units(lots, regions)
    updated = model.update(lots, origin_units=lot_units)
    if out_dir is not None:
        updated.save(out_dir)
    return updated


def backbone_column(lots: Sequence[LotRecord]) -> str | None:
    """The `backbone` column EMBED writes next to f_* features; ModelError if lots mix backbones."""
    backbones = {lot.extra.get("backbone") for lot in lots if lot.extra.get("backbone")}
    if len(backbones) > 1:
        raise ModelError(f"The lots were embedded with different backbones {sorted(b or '' for b in backbones)}.")
    return next(iter(backbones), None)
