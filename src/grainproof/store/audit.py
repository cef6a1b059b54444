"""The hash-chained, append-only audit log of verifications, reviews and alert acknowledgements.

Each entry's hash covers its own content and the previous entry's hash, so editing or deleting
any entry breaks every later link; `verify_chain` recomputes the chain and names the first
entry that no longer matches. Verification and review rows are also checked against the
payload their entry recorded, so editing the rows themselves is caught too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from grainproof.store.tables import AlertAcknowledgement, AuditEntry, Review, Verification, utc_now

#: prev_hash of the first entry.
GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same data always hashes the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(*, seq: int, kind: str, record_id: str, payload_json: str, created_at: str, prev_hash: str) -> str:
    """sha256 over an entry's content and the hash of the entry before it."""
    content = canonical_json(
        {
            "seq": seq,
            "kind": kind,
            "record_id": record_id,
            "payload": json.loads(payload_json),
            "created_at": created_at,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _lock_chain(session: Session) -> None:
    # PostgreSQL: one appender at a time per database (SQLite already holds its write lock: BEGIN IMMEDIATE).
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(727150001)"))


def append_entry(session: Session, *, kind: str, record_id: str, payload: dict[str, Any]) -> AuditEntry:
    """Append one entry in the caller's transaction; it commits or rolls back with the record it describes."""
    _lock_chain(session)
    payload_json = canonical_json(payload)
    # Core statements on the session's connection: every verification appends one, and the ORM's
    # unit of work cost several times the insert itself.
    connection = session.connection()
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    last = connection.execute(select(table.c.seq, table.c.entry_hash).order_by(table.c.seq.desc()).limit(1)).first()
    seq = (last.seq + 1) if last else 1
    prev = last.entry_hash if last else GENESIS_HASH
    created_at = utc_now().isoformat()
    values: dict[str, Any] = {
        "seq": seq,
        "kind": kind,
        "record_id": record_id,
        "payload_json": payload_json,
        "created_at": created_at,
        "prev_hash": prev,
        "entry_hash": entry_hash(
            seq=seq, kind=kind, record_id=record_id, payload_json=payload_json, created_at=created_at, prev_hash=prev
        ),
    }
    connection.execute(table.insert(), values)
    return AuditEntry(**values)


def verification_payload(row: Verification) -> dict[str, Any]:
    """What the audit log vouches for in a verification (vectors by their sha256)."""
    return {
        "id": row.id,
        "lot_id": row.lot_id,
        "species": row.species,
        "variety": row.variety,
        "site": row.site,
        "claim": json.loads(row.claim_json),
        "photo_hashes": json.loads(row.photo_hashes_json),
        "verdict": json.loads(row.verdict_json),
        "plausibility": row.plausibility,
        "flagged": row.flagged,
        "model_version": row.model_version,
        "reference_model_id": row.reference_model_id,
        "backbone_id": row.backbone_id,
        "vector_sha256": hashlib.sha256(row.vector).hexdigest(),
        "unit_vectors_sha256": hashlib.sha256(row.unit_vectors).hexdigest() if row.unit_vectors else None,
        "requested_by": row.requested_by,
        "created_at": row.created_at.isoformat(),
    }


def review_payload(row: Review) -> dict[str, Any]:
    """What the audit log vouches for in a review: the decision, the note, and who decided (an API key's id,
    or a named auditor's username) and which earlier decision it overrode."""
    payload: dict[str, Any] = {
        "id": row.id,
        "verification_id": row.verification_id,
        "decision": row.decision,
        "note": row.note,
        "promoted_reference_lot": row.promoted_reference_lot,
        "reviewer": row.reviewer,
        "created_at": row.created_at.isoformat(),
    }
    # Added only when set: entries written before these fields existed must still hash the same.
    if row.reviewer_user is not None:
        payload["reviewer_user"] = row.reviewer_user
    if row.overrides is not None:
        payload["overrides"] = row.overrides
    return payload


def acknowledgement_payload(row: AlertAcknowledgement) -> dict[str, Any]:
    """What the audit log vouches for in an alert acknowledgement: which alert, who, when, and the note."""
    return {
        "id": row.id,
        "alert_key": row.alert_key,
        "note": row.note,
        "acknowledged_by": row.acknowledged_by,
        "acknowledged_by_user": row.acknowledged_by_user,
        "created_at": row.created_at.isoformat(),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    """The result of re-checking the audit log: `ok`, how many entries were checked, and the first problem."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def _entries(session: Session) -> Iterator[AuditEntry]:
    yield from session.exec(select(AuditEntry).order_by(col(AuditEntry.seq)).execution_options(yield_per=500))


def verify_chain(session: Session) -> ChainReport:
    """Recompute every link and compare recorded rows; names the first entry altered or removed."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    recorded: dict[tuple[str, str], tuple[int, str]] = {}
    for entry in _entries(session):
        count += 1
        if entry.seq != expected_seq:
            missing = f"entries {expected_seq}..{entry.seq - 1} were" if entry.seq - 1 > expected_seq else None
            what = missing or f"entry {expected_seq} was"
            return ChainReport(
                ok=False,
                entries=count,
                first_bad_seq=expected_seq,
                problem=f"Audit entry {expected_seq}: missing; {what} removed from the log.",
            )
        if entry.prev_hash != expected_prev:
            return ChainReport(
                ok=False,
                entries=count,
                first_bad_seq=entry.seq,
                problem=f"Audit entry {entry.seq} ({entry.kind} {entry.record_id}): its link to entry "
                f"{entry.seq - 1} does not match; the log was altered at or before this entry.",
            )
        try:
            recomputed = entry_hash(
                seq=entry.seq,
                kind=entry.kind,
                record_id=entry.record_id,
                payload_json=entry.payload_json,
                created_at=entry.created_at,
                prev_hash=entry.prev_hash,
            )
        except ValueError:
            recomputed = ""
        if recomputed != entry.entry_hash:
            return ChainReport(
                ok=False,
                entries=count,
                first_bad_seq=entry.seq,
                problem=f"Audit entry {entry.seq} ({entry.kind} {entry.record_id}) was altered: "
                "its content no longer matches its hash.",
            )
        recorded[(entry.kind, entry.record_id)] = (entry.seq, _digest(entry.payload_json))
        expected_prev = entry.entry_hash
        expected_seq += 1
    row_problem = _check_rows(session, recorded)
    if row_problem is not None:
        seq, message = row_problem
        return ChainReport(ok=False, entries=count, first_bad_seq=seq, problem=message)
    return ChainReport(ok=True, entries=count)


def _digest(text: str) -> str:
    # Only digests are kept while checking, so memory stays small for a long log.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _recorded_rows(session: Session) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for verification in session.exec(select(Verification).execution_options(yield_per=500)):
        yield "verification", verification.id, verification_payload(verification)
    for review in session.exec(select(Review).execution_options(yield_per=500)):
        yield "review", review.id, review_payload(review)
    for acknowledgement in session.exec(select(AlertAcknowledgement).execution_options(yield_per=500)):
        yield "alert_acknowledgement", acknowledgement.id, acknowledgement_payload(acknowledgement)


def _check_rows(session: Session, recorded: dict[tuple[str, str], tuple[int, str]]) -> tuple[int | None, str] | None:
    """Each verification and review row must equal what its audit entry recorded, and none may be missing."""
    seen: set[tuple[str, str]] = set()
    for kind, record_id, payload in _recorded_rows(session):
        key = (kind, record_id)
        seen.add(key)
        if key not in recorded:
            return None, f"The {kind} {record_id} has no audit entry: it was added outside grainproof."
        seq, payload_digest = recorded[key]
        if _digest(canonical_json(payload)) != payload_digest:
            return seq, f"The {kind} {record_id} was edited after audit entry {seq} recorded it."
    for key, (seq, _) in sorted(recorded.items(), key=lambda item: item[1][0]):
        if key not in seen:
            return seq, f"The {key[0]} {key[1]} recorded by audit entry {seq} was deleted."
    return None
