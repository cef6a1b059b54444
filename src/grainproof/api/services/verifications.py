"""Verifying a claim at the intake, reading verifications back, and recording auditors' reviews.

Everything a verification writes (the row, its audit entry, its idempotency record) goes in
one transaction; photos are written to content-hash paths first, which is harmless if the
transaction then fails (an unreferenced file, never a row pointing at a missing file).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import and_, case, exists, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from grainproof.api.runtime import Runtime
from grainproof.api.schemas import MAX_OFFSET, InvalidParameterError, ParsedClaim, VectorError, claim_from_payload
from grainproof.domain import FLAGGED_CHECKS
from grainproof.errors import ClaimError, GrainproofError, ModelError, NotFoundError, PhotoError, UnknownVarietyError
from grainproof.settings import Settings
from grainproof.store.arrays import decode_array, encode_array
from grainproof.store.audit import append_entry, canonical_json, review_payload, verification_payload
from grainproof.store.database import read_connection, read_scope, session_scope
from grainproof.store.photos import content_hash
from grainproof.store.secrets import blind_audit_secret
from grainproof.store.tables import (
    REVIEW_DECISIONS,
    ApiKey,
    AuditEntry,
    BlindSample,
    IdempotencyRecord,
    ReferenceLot,
    Review,
    UserAccount,
    Verification,
    utc_now,
)

#: Decisions that say the declaration was true, so the lot may join the reference.
GENUINE_DECISIONS: frozenset[str] = frozenset({"false_alarm", "confirmed_genuine"})
#: Decisions that say it was false. Two decisions contradict when one is genuine and the other fraud;
#: "inconclusive" contradicts nothing.
FRAUD_DECISIONS: frozenset[str] = frozenset({"confirmed_fraud"})

#: Who reads or decides: a machine's API key, or a named person logged in to the auditor's desk.
Caller = ApiKey | UserAccount
MAX_NOTE_CHARS = 5000


class PhotoTooLargeError(PhotoError):
    """A photo is over the configured upload limit."""

    status_code = 413


class IdempotencyConflictError(GrainproofError):
    """An Idempotency-Key was reused for a different request."""

    status_code = 409


class FourEyesError(GrainproofError):
    """A decision contradicting an earlier one came without a note, or from the auditor who made the earlier one."""

    status_code = 409


class ForbiddenError(GrainproofError):
    """The API key's role does not allow this action."""

    status_code = 403


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadedPhoto:
    """One photo as received: the client's file name and the bytes."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationRequest:
    """A claim plus either photos or a precomputed lot vector (not both)."""

    claim: ParsedClaim
    photos: tuple[UploadedPhoto, ...] = ()
    lot_vector: np.ndarray | None = None
    unit_vectors: np.ndarray | None = None
    backbone_id: str | None = None
    alpha: float | None = None

    def __post_init__(self) -> None:
        if bool(self.photos) == (self.lot_vector is not None):
            raise ClaimError("Send either photos or a precomputed lot vector with the claim, not both or neither.")
        if self.alpha is not None and not 0.0 < self.alpha < 1.0:
            raise ClaimError(f"alpha {self.alpha} must lie strictly between 0 and 1.")

    def fingerprint(self) -> str:
        """What makes two requests "the same" for Idempotency-Key: content, not multipart framing."""
        content = {
            "claim": self.claim.payload,
            "photos": [content_hash(p.data) for p in self.photos],
            "lot_vector": _array_digest(self.lot_vector),
            "unit_vectors": _array_digest(self.unit_vectors),
            "backbone_id": self.backbone_id,
            "alpha": self.alpha,
        }
        return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def _array_digest(array: np.ndarray | None) -> str | None:
    return None if array is None else hashlib.sha256(encode_array(array)).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitResult:
    """The stored verification as returned to the client, and whether it replays an earlier request."""

    body: dict[str, Any]
    replayed: bool


def submit_verification(
    runtime: Runtime, request: VerificationRequest, *, caller: ApiKey, idempotency_key: str | None = None
) -> SubmitResult:
    """Score a claim on the active reference model, store the verdict and its audit entry, return it."""
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        with read_scope(runtime.engine) as session:
            earlier = _replay(session, caller, idempotency_key, fingerprint)
            if earlier is not None:
                return SubmitResult(body=earlier, replayed=True)
    if request.alpha is not None and caller.role != "admin":
        raise ForbiddenError(
            "alpha is the service's setting (GRAINPROOF_ALPHA, set by an admin), so that every verdict in the "
            "auditors' queue is flagged at the same level; an intake key cannot change it. Send the request "
            "without alpha."
        )
    with read_connection(runtime.engine) as connection:
        model_id, model = runtime.active_model(connection)
    _check_variety(model, request.claim)
    lot_vector, unit_vectors, backbone_id, warnings = _vectors(runtime, request)
    if lot_vector.shape[0] != model.dim:
        raise VectorError(
            f"The lot vector has {lot_vector.shape[0]} values but the active reference model "
            f"({model.version}) expects {model.dim}; embed with the model's backbone ({model.backbone_id})."
        )
    if unit_vectors is not None and unit_vectors.shape[1] != model.dim:
        raise VectorError(f"unit_vectors have {unit_vectors.shape[1]} values each; the model expects {model.dim}.")
    from grainproof.services.verification import verify_vectors

    verdict = verify_vectors(
        model,
        request.claim.claim,
        lot_vector,
        unit_vectors,
        alpha=request.alpha,
        backbone_id=backbone_id,
        warnings=warnings,
        nearest_lots=runtime.nearest_lots.index_for(model),
        device=request.claim.device,
        settings=runtime.settings,
    )
    photo_hashes = [runtime.photos.put(photo.data) for photo in request.photos]
    row = Verification(
        id=str(uuid.uuid4()),
        lot_id=request.claim.claim.lot_id,
        species=request.claim.claim.species,
        variety=request.claim.claim.variety,
        site=request.claim.site or caller.site,
        claim_json=canonical_json(request.claim.payload),
        photo_hashes_json=canonical_json(photo_hashes),
        verdict_json=canonical_json(verdict.as_dict()),
        plausibility=float(verdict.plausibility),
        flagged=bool(verdict.flagged),
        model_version=verdict.model_version,
        reference_model_id=model_id,
        backbone_id=backbone_id,
        vector=encode_array(lot_vector),
        unit_vectors=encode_array(unit_vectors) if unit_vectors is not None else None,
        requested_by=caller.id,
    )
    payload = verification_payload(row)
    table = Verification.__table__  # type: ignore[attr-defined]
    values = {column.name: getattr(row, column.name) for column in table.columns}

    blind = blind_sample_row(runtime.settings, row)

    def store(session: Session) -> None:
        # A Core insert on the session's connection: the ORM's unit of work cost more than the insert.
        session.connection().execute(table.insert(), values)
        append_entry(session, kind="verification", record_id=row.id, payload=payload)
        if blind is not None:
            session.connection().execute(BlindSample.__table__.insert(), blind)  # type: ignore[attr-defined]
        if idempotency_key is not None:
            assert caller.id is not None
            session.add(
                IdempotencyRecord(
                    api_key_id=caller.id, key=idempotency_key, request_hash=fingerprint, verification_id=row.id
                )
            )
            session.flush()

    try:
        # Shares a transaction (and its fsync) with concurrent requests; returns once committed.
        runtime.writes.run(store)
    except IntegrityError:
        # Two retries raced past the first check: the one that committed first wins, this one replays it.
        if idempotency_key is None:
            raise
        with session_scope(runtime.engine) as session:
            earlier = _replay(session, caller, idempotency_key, fingerprint)
        if earlier is None:
            raise
        return SubmitResult(body=earlier, replayed=True)
    runtime.metrics.observe_verdict(flagged=row.flagged, species=row.species, variety=row.variety)
    # A verification just stored has no reviews: its view needs no second read.
    return SubmitResult(body=_view(row, []), replayed=False)


def blind_sample_row(settings: Settings, row: Verification) -> dict[str, Any] | None:
    """The blind_sample row when the keyed draw picks this unflagged verification for a blind audit, else None."""
    from grainproof.monitor.blind_audit import is_blind_sample

    rate = settings.blind_audit_rate
    if rate <= 0.0 or not is_blind_sample(blind_audit_secret(settings), row.id, flagged=row.flagged, rate=rate):
        return None
    return {"verification_id": row.id, "audit_rate": rate, "created_at": row.created_at}


def _replay(session: Session, caller: ApiKey, key: str, fingerprint: str) -> dict[str, Any] | None:
    record = session.exec(
        select(IdempotencyRecord).where(IdempotencyRecord.api_key_id == caller.id, IdempotencyRecord.key == key)
    ).first()
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise IdempotencyConflictError(
            f"Idempotency-Key {key!r} was already used for a different request; "
            "use a new key for a new lot, or resend exactly the same request to get its result."
        )
    row = session.get(Verification, record.verification_id)
    assert row is not None
    return verification_view(session, row)


def _check_variety(model: Any, claim: ParsedClaim) -> None:
    wanted = (claim.claim.species, claim.claim.variety)
    known = [tuple(v) for v in model.varieties]
    if wanted in known:
        return
    same_species = sorted(v for s, v in known if s == wanted[0])
    if same_species:
        hint = f"known {wanted[0]} varieties: {', '.join(same_species)}"
    else:
        hint = f"known species: {', '.join(sorted({s for s, _ in known})) or 'none'}"
    raise UnknownVarietyError(
        f"Variety {wanted[1]!r} of species {wanted[0]!r} has no reference distribution in model "
        f"{model.version} ({hint}); add reference lots of it and rebuild the model."
    )


def _vectors(
    runtime: Runtime, request: VerificationRequest
) -> tuple[np.ndarray, np.ndarray | None, str | None, tuple[str, ...]]:
    if request.lot_vector is not None:
        return request.lot_vector, request.unit_vectors, request.backbone_id, ()
    limit = runtime.settings.max_upload_bytes
    for photo in request.photos:
        if len(photo.data) > limit:
            raise PhotoTooLargeError(
                f"Photo {photo.name!r} is {len(photo.data):,} bytes, over the {limit:,}-byte limit; "
                "send a smaller JPEG (the phone's normal quality is fine)."
            )
        if not photo.data:
            raise PhotoError(f"Photo {photo.name!r} is empty.")
    from grainproof.embed import lot_embedding

    embedder = runtime.embedder()
    embedded = [embedder.embed_bytes(photo.data, photo.name) for photo in request.photos]
    lot = lot_embedding(embedded)
    units = np.asarray(lot.unit_vectors, dtype=np.float64) if lot.unit_vectors is not None else None
    return np.asarray(lot.vector, dtype=np.float64), units, embedder.backbone_id, tuple(lot.warnings)


def verification_status(reviews: Sequence[Review]) -> str:
    """`open` until an auditor records a decision, then `reviewed`."""
    return "reviewed" if reviews else "open"


def verification_view(session: Session, row: Verification) -> dict[str, Any]:
    """A verification with its claim, photos, verdict and reviews, as the API returns it."""
    reviews = list(
        session.exec(
            select(Review).where(Review.verification_id == row.id).order_by(col(Review.created_at), col(Review.id))
        )
    )
    return _view(row, reviews)


def _view(row: Verification, reviews: Sequence[Review]) -> dict[str, Any]:
    verdict = json.loads(row.verdict_json)
    return {
        "id": row.id,
        "lot_id": row.lot_id,
        "species": row.species,
        "variety": row.variety,
        "site": row.site,
        "created_at": row.created_at.isoformat(),
        "status": verification_status(reviews),
        "flagged": row.flagged,
        "plausibility": row.plausibility,
        "model_version": row.model_version,
        "reference_model_id": row.reference_model_id,
        "backbone_id": row.backbone_id,
        "claim": json.loads(row.claim_json),
        "photos": json.loads(row.photo_hashes_json),
        "verdict": verdict,
        "reviews": [review_view(r) for r in reviews],
        "decision": reviews[-1].decision if reviews else None,
        "requested_by": row.requested_by,
    }


def review_view(row: Review) -> dict[str, Any]:
    """A review as the API shows it: exactly what the audit log vouches for."""
    return review_payload(row)


def _summary(row: Verification, decision: str | None, blind_sample: bool = False) -> dict[str, Any]:
    verdict = json.loads(row.verdict_json)
    return {
        "id": row.id,
        "lot_id": row.lot_id,
        "species": row.species,
        "variety": row.variety,
        "site": row.site,
        "created_at": row.created_at.isoformat(),
        "flagged": row.flagged,
        "plausibility": row.plausibility,
        "declared_origin_unit": verdict.get("declared_origin_unit"),
        "reasons": verdict.get("reasons", []),
        "model_version": row.model_version,
        "status": "reviewed" if decision else "open",
        "decision": decision,
        "blind_sample": blind_sample,
    }


def can_read_all(caller: Caller) -> bool:
    return caller.role in ("auditor", "admin")


def get_verification(session: Session, verification_id: str, *, caller: Caller) -> dict[str, Any]:
    """One verification; intake keys see only the ones they submitted."""
    row = session.get(Verification, verification_id)
    if row is None or (not can_read_all(caller) and row.requested_by != caller.id):
        raise NotFoundError(f"No verification with id {verification_id!r}.")
    return verification_view(session, row)


#: The most items one page of a listing holds.
MAX_PAGE = 500


def as_utc(moment: datetime | None) -> datetime | None:
    """A moment in UTC (one without a UTC offset is taken as UTC): how the database compares them."""
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


#: How the queue can be sorted; ties fall back to newest first.
QUEUE_ORDERS: tuple[str, ...] = ("newest", "oldest", "least_plausible", "most_plausible")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationFilter:
    """The queue's filters (None means "any") and where the page starts."""

    flagged: bool | None = None
    status: str | None = None
    site: str | None = None
    species: str | None = None
    variety: str | None = None
    lot_id: str | None = None
    limit: int = 50
    offset: int = 0
    #: Received at or after / at or before these moments (UTC); the auditor's desk filters by date.
    created_from: datetime | None = None
    created_to: datetime | None = None
    #: `newest` first (the queue) or `oldest` first (storage order: what a sync follows with `cursor`), or by
    #: plausibility (`least_plausible` first: the auditors' triage; no cursor, pages by offset).
    order: str = "newest"
    #: Where the page starts: the `next_cursor` of the previous page.
    cursor: str | None = None
    #: With `flagged`, also let through lots an auditor reviewed whatever their flag (the desk's view:
    #: a reviewed lot is part of the desk's record even when it was not flagged).
    include_reviewed: bool = False
    #: With `flagged=True`, also let through the unflagged lots drawn for a blind audit (the desk's queue).
    include_blind_samples: bool = False
    #: Only lots this check flagged (one of FLAGGED_CHECKS: origin_season, variety, purity).
    flagged_check: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "created_from", as_utc(self.created_from))
        object.__setattr__(self, "created_to", as_utc(self.created_to))
        if self.status not in (None, "open", "reviewed"):
            raise InvalidParameterError("status", f"status {self.status!r} is not one of open, reviewed.")
        if self.flagged_check is not None and self.flagged_check not in FLAGGED_CHECKS:
            raise InvalidParameterError(
                "flagged_check",
                f"flagged_check {self.flagged_check!r} is not one of {', '.join(FLAGGED_CHECKS)}.",
            )
        if self.order not in QUEUE_ORDERS:
            raise InvalidParameterError("order", f"order {self.order!r} is not one of {', '.join(QUEUE_ORDERS)}.")
        if self.cursor is not None and self.order not in ("newest", "oldest"):
            raise InvalidParameterError(
                "cursor", f"cursor pages follow storage order (newest or oldest), not {self.order}; use offset."
            )
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidParameterError("limit", f"limit {self.limit} must lie between 1 and {MAX_PAGE}.")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidParameterError("offset", f"offset {self.offset} must lie between 0 and {MAX_OFFSET}.")


def encode_cursor(order: str, seq: int) -> str:
    """An opaque page token: a position in the audit log (its order is the order rows were committed)."""
    return base64.urlsafe_b64encode(f"{order}:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: str) -> int:
    """The audit position a cursor of this listing holds; InvalidParameterError for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, seq = text.partition(":")
        position = int(seq)
    except ValueError:
        position, kind = -1, ""
    if kind != order or not 0 <= position <= 2**62 or len(cursor) > 40:
        raise InvalidParameterError(
            "cursor", f"cursor {cursor[:40]!r} is not a next_cursor of this listing (order {order}); start without one."
        )
    return position


def _stored_in_order(order: str, cursor: str | None) -> tuple[Any, list[Any]]:
    """The audit sequence number of each verification, its sort order, and the cursor's condition on it."""
    seq = col(AuditEntry.seq)
    conditions: list[Any] = []
    if cursor is not None:
        position = decode_cursor(cursor, order)
        conditions.append(seq < position if order == "newest" else seq > position)
    return (seq.desc() if order == "newest" else seq), conditions


def _stored_verification() -> Any:
    return and_(col(AuditEntry.record_id) == col(Verification.id), col(AuditEntry.kind) == "verification")


def _page_end(order: str, cursor: str | None, last_seq: int | None, has_more: bool) -> str | None:
    """The next page's cursor. Oldest first, it is always given, so a sync can ask again later from there."""
    if last_seq is not None and (has_more or order == "oldest"):
        return encode_cursor(order, last_seq)
    if order == "oldest":
        return cursor or encode_cursor(order, 0)
    return None


def _queue_conditions(query: VerificationFilter, caller: Caller) -> list[Any]:
    reviewed = exists().where(col(Review.verification_id) == col(Verification.id))
    conditions: list[Any] = []
    if not can_read_all(caller):
        conditions.append(col(Verification.requested_by) == caller.id)
    if query.flagged is not None:
        flag = col(Verification.flagged) == query.flagged
        if query.flagged and query.include_blind_samples and can_read_all(caller):
            flag = or_(flag, exists().where(col(BlindSample.verification_id) == col(Verification.id)))
        conditions.append(or_(flag, reviewed) if query.include_reviewed else flag)
    if query.status == "open":
        conditions.append(~reviewed)
    elif query.status == "reviewed":
        conditions.append(reviewed)
    for name in ("site", "species", "variety", "lot_id"):
        value = getattr(query, name)
        if value is not None:
            conditions.append(getattr(Verification, name) == value)
    if query.created_from is not None:
        conditions.append(col(Verification.created_at) >= query.created_from)
    if query.created_to is not None:
        conditions.append(col(Verification.created_at) <= query.created_to)
    if query.flagged_check is not None:
        conditions.append(flagged_by(query.flagged_check))
    return conditions


def flagged_by(check: str) -> Any:
    """SQL condition: the stored verdict was flagged by `check`.

    A verdict lists its checks in FLAGGED_CHECKS order and is stored as canonical JSON, so the lists holding
    `check` are few and known exactly: matching them as whole JSON text needs no new column. Verdicts stored
    before the variety and purity checks existed hold no list; a flagged one was flagged by its origin and season.
    """
    verdict = col(Verification.verdict_json)
    lists = [
        [name for name, keep in zip(FLAGGED_CHECKS, mask, strict=True) if keep]
        for mask in itertools.product((False, True), repeat=len(FLAGGED_CHECKS))
    ]
    conditions = [
        verdict.contains(f'"flagged_checks":{canonical_json(checks)}', autoescape=True)
        for checks in lists
        if check in checks
    ]
    if check == "origin_season":
        conditions.append(and_(col(Verification.flagged), ~verdict.contains('"flagged_checks":', autoescape=True)))
    return or_(*conditions)


def _queue_order(order: str, cursor: str | None) -> tuple[list[Any], list[Any]]:
    """The queue's sort keys and the cursor's condition: storage order (the audit log's sequence numbers,
    so a sync from a cursor misses nothing), or plausibility with newest first among equals."""
    ordering, from_cursor = _stored_in_order("oldest" if order == "oldest" else "newest", cursor)
    if order == "least_plausible":
        return [col(Verification.plausibility), ordering], from_cursor
    if order == "most_plausible":
        return [col(Verification.plausibility).desc(), ordering], from_cursor
    return [ordering], from_cursor


def _latest_decisions(session: Session, rows: Sequence[Verification]) -> dict[str, str]:
    latest: dict[str, str] = {}
    if rows:
        for review in session.exec(
            select(Review)
            .where(col(Review.verification_id).in_([r.id for r in rows]))
            .order_by(col(Review.created_at), col(Review.id))
        ):
            latest[review.verification_id] = review.decision
    return latest


def list_verifications(session: Session, query: VerificationFilter, *, caller: Caller) -> dict[str, Any]:
    """A page of verifications with the total matching count and the cursor of the next page.

    Pages follow the audit log's sequence numbers, which are handed out in commit order (appenders take
    the chain's lock until they commit), so a listing from a cursor never skips a row committed later.
    """
    conditions = _queue_conditions(query, caller)
    total = session.exec(select(func.count()).select_from(Verification).where(*conditions)).one()
    ordering, from_cursor = _queue_order(query.order, query.cursor)
    found = list(
        session.exec(
            select(Verification, col(AuditEntry.seq))
            .join(AuditEntry, _stored_verification())
            .where(*conditions, *from_cursor)
            .order_by(*ordering)
            .offset(query.offset)
            .limit(query.limit + 1)
        )
    )
    has_more = len(found) > query.limit
    found = found[: query.limit]
    rows = [row for row, _ in found]
    latest = _latest_decisions(session, rows)
    # Intake keys never learn which of their lots are audited blind.
    blind = blind_sample_ids(session, [r.id for r in rows]) if can_read_all(caller) else set()
    in_storage_order = query.order in ("newest", "oldest")
    return {
        "items": [_summary(r, latest.get(r.id), r.id in blind) for r in rows],
        "total": int(total),
        "limit": query.limit,
        "offset": query.offset,
        "has_more": has_more,
        "next_cursor": _page_end(query.order, query.cursor, found[-1][1] if found else None, has_more)
        if in_storage_order
        else None,
    }


def iter_verification_summaries(
    session: Session, query: VerificationFilter, *, caller: Caller, batch: int = 500
) -> Iterator[dict[str, Any]]:
    """Every verification the filter matches (its limit and offset aside), in its order, as the queue lists them:
    for exports, read in batches so a long queue never sits in memory at once."""
    ordering, from_cursor = _queue_order(query.order, query.cursor)
    statement = (
        select(Verification)
        .join(AuditEntry, _stored_verification())
        .where(*_queue_conditions(query, caller), *from_cursor)
        .order_by(*ordering)
    )
    rows: list[Verification] = []
    for row in session.exec(statement.execution_options(yield_per=batch)):
        rows.append(row)
        if len(rows) == batch:
            yield from _summaries(session, rows)
            rows = []
    yield from _summaries(session, rows)


def _summaries(session: Session, rows: Sequence[Verification]) -> Iterator[dict[str, Any]]:
    latest = _latest_decisions(session, rows)
    blind = blind_sample_ids(session, [r.id for r in rows])
    return (_summary(r, latest.get(r.id), r.id in blind) for r in rows)


def blind_sample_ids(session: Session, verification_ids: Sequence[str]) -> set[str]:
    """Which of these verifications were drawn for a blind audit."""
    if not verification_ids:
        return set()
    return set(
        session.exec(select(BlindSample.verification_id).where(col(BlindSample.verification_id).in_(verification_ids)))
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which traceability events to read: of one verification, or all, with filters, from a cursor on."""

    verification_id: str | None = None
    flagged: bool | None = None
    site: str | None = None
    #: Events (verifications, reviews) that happened at or after / at or before these moments.
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", as_utc(self.since))
        object.__setattr__(self, "until", as_utc(self.until))
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidParameterError("limit", f"limit {self.limit} must lie between 1 and {MAX_PAGE}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceEvent:
    """A verification, or a review of one, as one traceability event (the verification travels with its review)."""

    verification: dict[str, Any]
    review: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPage:
    """Events in the order they were stored, whether more follow now, and the cursor to continue from."""

    events: list[TraceEvent]
    has_more: bool
    next_cursor: str


def trace_events(session: Session, query: EventFilter, *, caller: Caller) -> EventPage:
    """Verifications and reviews in commit order (the audit log's), for EPCIS export and incremental sync."""
    audit = AuditEntry.__table__  # type: ignore[attr-defined]
    verification = Verification.__table__  # type: ignore[attr-defined]
    review = Review.__table__  # type: ignore[attr-defined]
    verification_id = case((audit.c.kind == "verification", audit.c.record_id), else_=review.c.verification_id)
    happened = func.coalesce(review.c.created_at, verification.c.created_at)
    conditions: list[Any] = [audit.c.kind.in_(["verification", "review"])]
    if query.cursor is not None:
        conditions.append(audit.c.seq > decode_cursor(query.cursor, "events"))
    if not can_read_all(caller):
        conditions.append(verification.c.requested_by == caller.id)
    if query.verification_id is not None:
        conditions.append(verification.c.id == query.verification_id)
    if query.flagged is not None:
        conditions.append(verification.c.flagged == query.flagged)
    if query.site is not None:
        conditions.append(verification.c.site == query.site)
    if query.since is not None:
        conditions.append(happened >= query.since)
    if query.until is not None:
        conditions.append(happened <= query.until)
    statement = (
        select(audit.c.seq, verification.c.id.label("verification_id"), review.c.id.label("review_id"))
        .select_from(
            audit.outerjoin(review, and_(audit.c.kind == "review", review.c.id == audit.c.record_id)).join(
                verification, verification.c.id == verification_id
            )
        )
        .where(*conditions)
        .order_by(audit.c.seq)
        .limit(query.limit + 1)
    )
    found = list(session.connection().execute(statement))
    has_more = len(found) > query.limit
    found = found[: query.limit]
    verifications = {
        row.id: row
        for row in session.exec(
            select(Verification).where(col(Verification.id).in_({f.verification_id for f in found}))
        )
    }
    reviews_of: dict[str, list[Review]] = {}
    for item in session.exec(
        select(Review)
        .where(col(Review.verification_id).in_(list(verifications)))
        .order_by(col(Review.created_at), col(Review.id))
    ):
        reviews_of.setdefault(item.verification_id, []).append(item)
    views = {vid: _view(row, reviews_of.get(vid, [])) for vid, row in verifications.items()}
    reviews = {r.id: review_view(r) for rs in reviews_of.values() for r in rs}
    events = [
        TraceEvent(verification=views[f.verification_id], review=reviews[f.review_id] if f.review_id else None)
        for f in found
    ]
    end = found[-1].seq if found else None
    next_cursor = encode_cursor("events", end) if end is not None else (query.cursor or encode_cursor("events", 0))
    return EventPage(events=events, has_more=has_more, next_cursor=next_cursor)


def record_review(
    runtime: Runtime,
    verification_id: str,
    *,
    decision: str,
    note: str = "",
    promote_to_reference: bool = False,
    caller: Caller,
) -> dict[str, Any]:
    """Append an auditor's decision (and, for a genuine lot, add it to the reference lots) in one transaction.

    Four-eyes: a decision that contradicts an earlier one on the same verification (genuine after fraud,
    or fraud after genuine) needs a note and must come from another auditor than the one who made the
    earlier decision; FourEyesError (409) otherwise. The review then names the decision it overrides,
    and the audit log vouches for that.
    """
    if caller.role not in ("auditor", "admin"):
        raise ForbiddenError("Only auditor and admin keys can record reviews.")
    if decision not in REVIEW_DECISIONS:
        raise ClaimError(f"decision {decision!r} is not one of {', '.join(REVIEW_DECISIONS)}.")
    if len(note) > MAX_NOTE_CHARS:
        raise ClaimError(f"The note has {len(note)} characters; keep it under {MAX_NOTE_CHARS}.")
    if promote_to_reference and decision not in GENUINE_DECISIONS:
        raise ClaimError(
            f"Only a lot confirmed genuine (decision {' or '.join(sorted(GENUINE_DECISIONS))}) "
            "can be promoted into the reference."
        )
    with session_scope(runtime.engine) as session:
        # FOR UPDATE (PostgreSQL): two decisions on one lot at once queue here, so the second sees the first.
        verification = session.exec(
            select(Verification).where(Verification.id == verification_id).with_for_update()
        ).first()
        if verification is None:
            raise NotFoundError(f"No verification with id {verification_id!r}.")
        earlier = list(
            session.exec(
                select(Review)
                .where(Review.verification_id == verification.id)
                .order_by(col(Review.created_at), col(Review.id))
            )
        )
        overridden = _check_four_eyes(earlier, decision=decision, note=note, caller=caller)
        promoted: str | None = None
        if promote_to_reference:
            promoted = _promote(session, verification)
        review = Review(
            id=str(uuid.uuid4()),
            verification_id=verification.id,
            decision=decision,
            note=note,
            promoted_reference_lot=promoted,
            reviewer=caller.id if isinstance(caller, ApiKey) else None,
            reviewer_user=caller.username if isinstance(caller, UserAccount) else None,
            overrides=overridden.id if overridden is not None else None,
        )
        session.add(review)
        session.flush()
        append_entry(session, kind="review", record_id=review.id, payload=review_payload(review))
        return review_view(review)


def _outcome(decision: str) -> str | None:
    if decision in GENUINE_DECISIONS:
        return "genuine"
    if decision in FRAUD_DECISIONS:
        return "fraud"
    return None


def decided_by(review: Review, caller: Caller) -> bool:
    """Whether `caller` (a key or a named auditor) recorded this review."""
    if isinstance(caller, UserAccount):
        return review.reviewer_user == caller.username
    return review.reviewer_user is None and review.reviewer == caller.id


def _check_four_eyes(earlier: Sequence[Review], *, decision: str, note: str, caller: Caller) -> Review | None:
    """The latest earlier review that `decision` contradicts (None: no contradiction), or FourEyesError."""
    outcome = _outcome(decision)
    contradicted = [r for r in earlier if outcome is not None and _outcome(r.decision) not in (None, outcome)]
    if not contradicted:
        return None
    own = [r for r in contradicted if decided_by(r, caller)]
    if own:
        raise FourEyesError(
            f"This decision contradicts your own earlier {_said(own[-1])}: a second auditor must make it "
            "(four-eyes rule); ask another auditor to review the lot."
        )
    if not note.strip():
        raise FourEyesError(
            f"This decision contradicts the earlier {_said(contradicted[-1])}: a contradicting decision needs a "
            "note saying why (four-eyes rule)."
        )
    return contradicted[-1]


def _said(review: Review) -> str:
    return f"{review.decision.replace('_', ' ')!r} recorded on {review.created_at:%Y-%m-%d %H:%M} UTC"


def _promote(session: Session, verification: Verification) -> str:
    claim_data = json.loads(verification.claim_json)
    claim = claim_from_payload(claim_data)
    if session.exec(select(ReferenceLot).where(ReferenceLot.lot_id == claim.lot_id)).first() is not None:
        raise IdempotencyConflictError(f"Lot {claim.lot_id!r} is already a reference lot; it cannot be promoted twice.")
    vector = decode_array(verification.vector)
    existing_dim = session.exec(select(ReferenceLot.dim).limit(1)).first()
    if existing_dim is not None and existing_dim != vector.shape[0]:
        raise ModelError(
            f"This lot's vector has {vector.shape[0]} values but the reference lots have {existing_dim}; "
            "it was embedded with another backbone and cannot join this reference."
        )
    origin = claim.origin
    session.add(
        ReferenceLot(
            lot_id=claim.lot_id,
            species=claim.species,
            variety=claim.variety,
            lon=origin.lon,
            lat=origin.lat,
            region=origin.region,
            origin_geojson=origin.geometry_geojson,
            harvest_date=claim.harvest_date.isoformat() if claim.harvest_date else None,
            device=claim_data.get("device"),
            dim=int(vector.shape[0]),
            vector=verification.vector,
            unit_vectors=verification.unit_vectors,
            extra_json=canonical_json({"backbone": verification.backbone_id} if verification.backbone_id else {}),
            photo_hashes_json=verification.photo_hashes_json,
            source="review",
            verification_id=verification.id,
            created_at=utc_now(),
        )
    )
    session.flush()
    return claim.lot_id
