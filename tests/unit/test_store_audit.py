"""The hash-chained audit log: an intact chain verifies; altering, removing or forging any entry,
or editing a verification or review row, is detected and the first bad entry is named."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlmodel import Session

from grainproof.settings import Settings
from grainproof.store.arrays import encode_array
from grainproof.store.audit import (
    GENESIS_HASH,
    append_entry,
    entry_hash,
    review_payload,
    verification_payload,
    verify_chain,
)
from grainproof.store.database import create_db_engine, session_scope, upgrade
from grainproof.store.tables import AuditEntry, Review, Verification

ENTRIES = 6  # verifications v0..v2 and one review each, interleaved


def _verification(i: int) -> Verification:
    return Verification(
        id=f"v{i}-{uuid.UUID(int=i)}",
        lot_id=f"lot{i}",
        species="soft_wheat",
        variety="apache",
        claim_json=json.dumps({"lot_id": f"lot{i}"}),
        photo_hashes_json="[]",
        verdict_json=json.dumps({"plausibility": 0.5, "flagged": False}),
        plausibility=0.5,
        flagged=False,
        model_version="m1",
        vector=encode_array(np.arange(4.0) + i),
    )


def fill(engine: Engine) -> None:
    for i in range(ENTRIES // 2):
        with session_scope(engine) as session:
            row = _verification(i)
            session.add(row)
            session.flush()
            append_entry(session, kind="verification", record_id=row.id, payload=verification_payload(row))
        with session_scope(engine) as session:
            review = Review(id=f"r{i}", verification_id=row.id, decision="false_alarm", note="checked")
            session.add(review)
            session.flush()
            append_entry(session, kind="review", record_id=review.id, payload=review_payload(review))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_db_engine(Settings(data_dir=tmp_path_factory.mktemp("audit")))
    upgrade(engine)
    fill(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def session(engine: Engine) -> Iterator[Session]:
    """A session whose changes are rolled back: each test tampers in its own transaction."""
    with Session(engine) as session:
        yield session
        session.rollback()


def test_intact_chain_verifies(session: Session) -> None:
    report = verify_chain(session)
    assert report.ok and report.entries == ENTRIES and report.problem is None


def test_chain_links_each_entry_to_the_previous_hash(session: Session) -> None:
    entries = session.execute(text("SELECT seq, prev_hash, entry_hash FROM audit_entry ORDER BY seq")).all()
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.entry_hash for earlier, later in itertools.pairwise(entries))


@given(seq=st.integers(1, ENTRIES), column=st.sampled_from(["payload_json", "created_at", "kind", "record_id"]))
def test_editing_any_entry_is_detected_naming_that_entry(engine: Engine, seq: int, column: str) -> None:
    with Session(engine) as session:
        value = session.execute(text(f"SELECT {column} FROM audit_entry WHERE seq = :seq").bindparams(seq=seq)).scalar()
        tampered = (
            value.replace("checked", "CHECKED").replace("0.5", "0.9") if column == "payload_json" else value + "x"
        )
        if tampered == value:
            tampered = value[:-1] + " }"
        session.execute(text(f"UPDATE audit_entry SET {column} = :v WHERE seq = :seq").bindparams(v=tampered, seq=seq))
        report = verify_chain(session)
        session.rollback()
    assert not report.ok
    assert report.first_bad_seq == seq
    assert f"Audit entry {seq}" in (report.problem or "")


@given(seq=st.integers(1, ENTRIES - 1))
def test_removing_an_entry_is_detected_naming_it(engine: Engine, seq: int) -> None:
    with Session(engine) as session:
        session.execute(text("DELETE FROM audit_entry WHERE seq = :seq").bindparams(seq=seq))
        report = verify_chain(session)
        session.rollback()
    assert not report.ok and report.first_bad_seq == seq
    assert "removed" in (report.problem or "")


def test_removing_the_last_entry_is_detected_through_its_record(session: Session) -> None:
    session.execute(text("DELETE FROM audit_entry WHERE seq = :seq").bindparams(seq=ENTRIES))
    report = verify_chain(session)
    assert not report.ok and "r2 has no audit entry" in (report.problem or "")


def test_rewriting_an_entry_and_its_hash_breaks_the_next_link(session: Session) -> None:
    entry = session.get(AuditEntry, 2)
    assert entry is not None
    entry.payload_json = entry.payload_json.replace("checked", "forged")

    entry.entry_hash = entry_hash(
        seq=entry.seq,
        kind=entry.kind,
        record_id=entry.record_id,
        payload_json=entry.payload_json,
        created_at=entry.created_at,
        prev_hash=entry.prev_hash,
    )
    session.add(entry)
    session.flush()
    report = verify_chain(session)
    assert not report.ok and report.first_bad_seq == 3 and "link" in (report.problem or "")


def test_editing_a_verification_row_is_detected_naming_its_entry(session: Session) -> None:
    session.execute(text("UPDATE verification SET flagged = 1 WHERE lot_id = 'lot1'"))
    report = verify_chain(session)
    assert not report.ok and report.first_bad_seq == 3
    assert "verification v1" in (report.problem or "") and "edited" in (report.problem or "")


def test_editing_a_review_note_is_detected(session: Session) -> None:
    session.execute(text("UPDATE review SET note = 'nothing to see' WHERE id = 'r0'"))
    report = verify_chain(session)
    assert not report.ok and report.first_bad_seq == 2 and "review r0" in (report.problem or "")


def test_appending_after_a_rollback_keeps_the_chain_contiguous(tmp_path: Path) -> None:
    engine = create_db_engine(Settings(data_dir=tmp_path))
    upgrade(engine)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        append_entry(session, kind="verification", record_id="ghost", payload={"x": 1})
        raise RuntimeError("the record's transaction failed")
    with session_scope(engine) as session:
        entry = append_entry(session, kind="verification", record_id="real", payload={"x": 2})
        assert entry.seq == 1 and entry.prev_hash == GENESIS_HASH
    engine.dispose()


def test_reviews_written_before_named_auditors_keep_the_payload_their_entries_hashed() -> None:
    """Audit entries written before reviews could name a desk account or an overridden decision must still
    verify: those fields enter the payload only when set."""
    from datetime import UTC, datetime

    old = Review(
        id="r1", verification_id="v1", decision="false_alarm", reviewer=3, created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert set(review_payload(old)) == {
        "id",
        "verification_id",
        "decision",
        "note",
        "promoted_reference_lot",
        "reviewer",
        "created_at",
    }
    named = Review(
        id="r2",
        verification_id="v1",
        decision="confirmed_fraud",
        note="second look",
        reviewer_user="bob",
        overrides="r1",
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert review_payload(named)["reviewer_user"] == "bob" and review_payload(named)["overrides"] == "r1"
