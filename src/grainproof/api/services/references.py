"""Reference data: adding reference lots (one, a manifest in bulk, or a reviewed lot), building
model versions in the background, and switching the active version atomically."""

from __future__ import annotations

import json
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from grainproof.api.runtime import Runtime
from grainproof.api.schemas import (
    MAX_OFFSET,
    InvalidParameterError,
    VectorError,
    parse_claim,
    parse_unit_vectors,
    parse_vector,
)
from grainproof.domain import Claim, LotRecord, Origin
from grainproof.errors import ClaimError, GrainproofError, ManifestError, ModelError, NotFoundError
from grainproof.manifest import parse_manifest_text
from grainproof.store.arrays import decode_array, encode_array
from grainproof.store.audit import canonical_json
from grainproof.store.database import session_scope
from grainproof.store.tables import ApiKey, ReferenceLot, ReferenceModelVersion, utc_now


class ReferenceConflictError(GrainproofError):
    """A reference lot id is already taken, or a model is not in a state that allows the action."""

    status_code = 409


def _existing_dim(session: Session) -> int | None:
    return session.exec(select(ReferenceLot.dim).limit(1)).first()


#: Where an import finds a manifest's photos: the photo path as the manifest writes it -> its bytes (None: absent).
PhotoSource = Callable[[str], bytes | None]


def _lot_row(
    lot: LotRecord, vector: np.ndarray, units: np.ndarray | None, *, source: str, photo_hashes: Sequence[str] = ()
) -> ReferenceLot:
    origin = lot.claim.origin
    return ReferenceLot(
        lot_id=lot.lot_id,
        species=lot.claim.species,
        variety=lot.claim.variety,
        lon=origin.lon,
        lat=origin.lat,
        region=origin.region,
        origin_geojson=origin.geometry_geojson,
        harvest_date=lot.claim.harvest_date.isoformat() if lot.claim.harvest_date else None,
        device=lot.device,
        dim=int(vector.shape[0]),
        vector=encode_array(vector),
        unit_vectors=encode_array(units) if units is not None else None,
        extra_json=canonical_json(dict(lot.extra)),
        photo_hashes_json=canonical_json(list(photo_hashes)),
        source=source,
    )


def reference_lot_view(row: ReferenceLot) -> dict[str, Any]:
    """A reference lot as the API returns it (the vector's length, not the vector)."""
    return {
        "lot_id": row.lot_id,
        "species": row.species,
        "variety": row.variety,
        "origin": {
            "lon": row.lon,
            "lat": row.lat,
            "region": row.region,
            "geometry": json.loads(row.origin_geojson) if row.origin_geojson else None,
        },
        "harvest_date": row.harvest_date,
        "device": row.device,
        "dim": row.dim,
        "has_unit_vectors": row.unit_vectors is not None,
        "photos": json.loads(row.photo_hashes_json),
        "extra": json.loads(row.extra_json),
        "source": row.source,
        "verification_id": row.verification_id,
        "created_at": row.created_at.isoformat(),
    }


def add_reference_lot(runtime: Runtime, data: Any) -> dict[str, Any]:
    """One reference lot from JSON: the claim fields plus `features` (and optionally `unit_vectors`, `extra`)."""
    if not isinstance(data, dict):
        raise ClaimError("A reference lot must be a JSON object with a claim's fields and `features`.")
    claim_fields = {k: v for k, v in data.items() if k not in ("features", "unit_vectors", "extra")}
    parsed = parse_claim(claim_fields, prefix="")
    vector = parse_vector(data.get("features"), "features")
    units = parse_unit_vectors(data.get("unit_vectors"), int(vector.shape[0]))
    extra = data.get("extra") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ClaimError("extra must be an object of text values.")
    lot = LotRecord(claim=parsed.claim, device=parsed.device, features=tuple(vector.tolist()), extra=extra)
    with session_scope(runtime.engine) as session:
        _check_new_lots(session, [lot.lot_id], int(vector.shape[0]))
        row = _lot_row(lot, vector, units, source="api")
        session.add(row)
        session.flush()
        return reference_lot_view(row)


def _check_new_lots(session: Session, lot_ids: Sequence[str], dim: int) -> None:
    existing_dim = _existing_dim(session)
    if existing_dim is not None and existing_dim != dim:
        raise VectorError(
            f"These vectors have {dim} values but the reference lots have {existing_dim}: "
            "embed them with the same backbone as the existing reference."
        )
    taken = sorted(session.exec(select(ReferenceLot.lot_id).where(col(ReferenceLot.lot_id).in_(list(lot_ids)))).all())
    if taken:
        shown = ", ".join(taken[:20]) + (f" and {len(taken) - 20} more" if len(taken) > 20 else "")
        raise ReferenceConflictError(f"{len(taken)} lot id(s) are already reference lots: {shown}.")


def import_reference_manifest(
    runtime: Runtime,
    text: str,
    *,
    name: str = "upload",
    units: Mapping[str, np.ndarray] | None = None,
    source: str = "import",
    photos: PhotoSource | None = None,
) -> dict[str, Any]:
    """Add every lot of a manifest with feature columns; nothing is written if any row is bad.

    With `photos`, the photos the manifest names are stored by content hash (as a verification's are),
    so the desk shows them beside the nearest reference lots; a photo the source lacks is a problem of
    the manifest. Without it, only the vectors are kept.
    """
    lots = parse_manifest_text(text, name=name, check_photos=False)
    problems = [
        f"lot {lot.lot_id}: no feature values (embed the photos first: `grainproof embed`)"
        for lot in lots
        if lot.features is None
    ]
    if problems:
        raise ManifestError(name, problems)
    dims = {len(lot.features or ()) for lot in lots}
    if len(dims) != 1:
        raise ManifestError(name, [f"feature vectors have different lengths {sorted(dims)}"])
    dim = dims.pop()
    units = units or {}
    bad_units = [
        f"lot {lot_id}: unit vectors have shape {array.shape}, expected (m, {dim})"
        for lot_id, array in units.items()
        if array.ndim != 2 or array.shape[1] != dim
    ]
    if bad_units:
        raise ManifestError(name, bad_units)
    hashes = _store_photos(runtime, lots, photos, name) if photos is not None else {}
    with session_scope(runtime.engine) as session:
        _check_new_lots(session, [lot.lot_id for lot in lots], dim)
        for lot in lots:
            vector = np.asarray(lot.features, dtype=np.float64)
            row = _lot_row(lot, vector, units.get(lot.lot_id), source=source, photo_hashes=hashes.get(lot.lot_id, ()))
            session.add(row)
        session.flush()
    return {
        "imported": len(lots),
        "dim": dim,
        "photos": sum(len(h) for h in hashes.values()),
        "lot_ids": [lot.lot_id for lot in lots[:100]],
    }


def _store_photos(runtime: Runtime, lots: Sequence[LotRecord], photos: PhotoSource, name: str) -> dict[str, list[str]]:
    """Every lot's photos into the content-hash store, before the rows: a failed import leaves only unused files."""
    hashes: dict[str, list[str]] = {}
    missing: list[str] = []
    for lot in lots:
        hashes[lot.lot_id] = []
        for path in lot.photos:
            data = photos(path)
            if data is None:
                missing.append(f"lot {lot.lot_id}: photo {path!r} was not found")
            else:
                hashes[lot.lot_id].append(runtime.photos.put(data))
    if missing:
        raise ManifestError(name, missing)
    return hashes


def list_reference_lots(
    session: Session, *, species: str | None = None, variety: str | None = None, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    """A page of reference lots, newest first."""
    if not 1 <= limit <= 500:
        raise InvalidParameterError("limit", f"limit {limit} must lie between 1 and 500.")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidParameterError("offset", f"offset {offset} must lie between 0 and {MAX_OFFSET}.")
    query = select(ReferenceLot)
    if species is not None:
        query = query.where(ReferenceLot.species == species)
    if variety is not None:
        query = query.where(ReferenceLot.variety == variety)
    rows = session.exec(query.order_by(col(ReferenceLot.id).desc()).offset(offset).limit(limit)).all()
    return {"items": [reference_lot_view(r) for r in rows], "limit": limit, "offset": offset}


def get_reference_lot(session: Session, lot_id: str) -> dict[str, Any]:
    row = session.exec(select(ReferenceLot).where(ReferenceLot.lot_id == lot_id)).first()
    if row is None:
        raise NotFoundError(f"No reference lot {lot_id!r}.")
    return reference_lot_view(row)


def lot_record(row: ReferenceLot) -> LotRecord:
    """A stored reference lot as the LotRecord the reference builder takes."""
    from datetime import date

    claim = Claim(
        lot_id=row.lot_id,
        species=row.species,
        variety=row.variety,
        origin=Origin(lon=row.lon, lat=row.lat, region=row.region, geometry_geojson=row.origin_geojson),
        harvest_date=date.fromisoformat(row.harvest_date) if row.harvest_date else None,
    )
    return LotRecord(
        claim=claim,
        device=row.device,
        features=tuple(float(v) for v in decode_array(row.vector)),
        extra=json.loads(row.extra_json),
    )


def model_view(row: ReferenceModelVersion) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "version": row.version,
        "is_active": row.is_active,
        "seed": row.seed,
        "region_set": row.region_set,
        "lot_count": row.lot_count,
        "backbone_id": row.backbone_id,
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "activated_at": row.activated_at.isoformat() if row.activated_at else None,
    }


def request_model_build(
    runtime: Runtime,
    *,
    caller: ApiKey | None,
    seed: int | None = None,
    region_set: str | None = None,
    background: bool = True,
) -> dict[str, Any]:
    """Queue a new model version built from every reference lot; returns it with status `queued`."""
    with session_scope(runtime.engine) as session:
        count = session.exec(select(ReferenceLot.id).limit(1)).first()
        if count is None:
            raise ModelError("There are no reference lots yet: add some (POST /v1/reference-lots) first.")
        row = ReferenceModelVersion(
            id=str(uuid.uuid4()),
            seed=runtime.settings.seed if seed is None else seed,
            region_set=region_set if region_set is not None else runtime.settings.region_set,
            requested_by=caller.id if caller else None,
        )
        session.add(row)
        session.flush()
        view = model_view(row)
    if background:
        runtime.submit_build(build_model_version, runtime, row.id)
    else:
        build_model_version(runtime, row.id)
        with session_scope(runtime.engine) as session:
            built = session.get(ReferenceModelVersion, row.id)
            assert built is not None
            view = model_view(built)
    return view


def build_model_version(runtime: Runtime, model_id: str) -> None:
    """Build a queued version (runs in the background worker); the row ends `ready` or `failed`."""
    from grainproof.services.references import build_reference_model

    with session_scope(runtime.engine) as session:
        row = session.get(ReferenceModelVersion, model_id)
        if row is None or row.status != "queued":
            return
        row.status = "building"
        session.add(row)
        seed, region_set = row.seed, row.region_set
        lot_rows = list(session.exec(select(ReferenceLot).order_by(col(ReferenceLot.id))))
    out_dir = runtime.settings.models_dir / model_id
    started = time.perf_counter()
    try:
        lots = [lot_record(r) for r in lot_rows]
        units = {r.lot_id: decode_array(r.unit_vectors) for r in lot_rows if r.unit_vectors is not None}
        backbones = {lot.extra.get("backbone") for lot in lots}
        backbone_id = backbones.pop() if len(backbones) == 1 else None
        model = build_reference_model(
            lots, out_dir, units=units or None, backbone_id=backbone_id, region_set=region_set, seed=seed
        )
    except Exception as exc:  # the build failed: record why, for the admin who polls the status
        message = str(exc) if isinstance(exc, GrainproofError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, GrainproofError):
            traceback.print_exc()
        shutil.rmtree(out_dir, ignore_errors=True)
        with session_scope(runtime.engine) as session:
            failed = session.get(ReferenceModelVersion, model_id)
            assert failed is not None
            failed.status, failed.error, failed.finished_at = "failed", message, utc_now()
            session.add(failed)
        runtime.metrics.observe_model_build(outcome="failed", seconds=time.perf_counter() - started)
        return
    # On PostgreSQL with pgvector, the version's nearest-lot index is loaded before it can be activated.
    runtime.nearest_lots.load(model)
    with session_scope(runtime.engine) as session:
        ready = session.get(ReferenceModelVersion, model_id)
        assert ready is not None
        ready.status, ready.version, ready.path = "ready", model.version, str(out_dir)
        ready.lot_count, ready.backbone_id, ready.finished_at = len(lots), model.backbone_id, utc_now()
        session.add(ready)
    runtime.metrics.observe_model_build(outcome="ready", seconds=time.perf_counter() - started)


def fail_interrupted_builds(runtime: Runtime) -> int:
    """Mark builds left queued/building by a stopped process as failed (called at start-up)."""
    with session_scope(runtime.engine) as session:
        rows = session.exec(
            select(ReferenceModelVersion).where(col(ReferenceModelVersion.status).in_(["queued", "building"]))
        ).all()
        for row in rows:
            row.status, row.error, row.finished_at = "failed", "interrupted: the service stopped first", utc_now()
            session.add(row)
        return len(rows)


def get_model(session: Session, model_id: str) -> dict[str, Any]:
    row = session.get(ReferenceModelVersion, model_id)
    if row is None:
        raise NotFoundError(f"No reference model {model_id!r}.")
    return model_view(row)


def list_models(session: Session) -> list[dict[str, Any]]:
    rows = session.exec(select(ReferenceModelVersion).order_by(col(ReferenceModelVersion.created_at).desc()))
    return [model_view(r) for r in rows]


def activate_model(runtime: Runtime, model_id: str) -> dict[str, Any]:
    """Make a ready version the active one, in one transaction (verdicts switch from the next request)."""
    with session_scope(runtime.engine) as session:
        row = session.get(ReferenceModelVersion, model_id)
        if row is None:
            raise NotFoundError(f"No reference model {model_id!r}.")
        if row.status != "ready" or row.path is None:
            raise ReferenceConflictError(
                f"Reference model {model_id} is {row.status}, not ready; wait for its build to finish."
            )
        runtime.load_model(row.path)  # fail before switching if the artefact cannot be loaded
        for active in session.exec(
            select(ReferenceModelVersion).where(ReferenceModelVersion.is_active == True)  # noqa: E712
        ):
            active.is_active = False
            session.add(active)
        session.flush()
        row.is_active, row.activated_at = True, utc_now()
        session.add(row)
        session.flush()
        return model_view(row)
