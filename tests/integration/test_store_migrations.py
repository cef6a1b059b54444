"""Migrations run up and down on SQLite and PostgreSQL, and match the tables the code declares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from service_support import postgres_schema
from sqlalchemy import Engine, text
from sqlmodel import SQLModel

from grainproof.settings import Settings
from grainproof.store.database import (
    DatabaseError,
    create_db_engine,
    current_revision,
    downgrade,
    head_revision,
    require_current_schema,
    table_names,
    upgrade,
)

TABLES = {
    "api_key",
    "user_account",
    "login_failure",
    "reference_lot",
    "reference_model",
    "verification",
    "review",
    "audit_entry",
    "idempotency_record",
}


@pytest.fixture()
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(Settings(data_dir=tmp_path))
    yield engine
    engine.dispose()


@pytest.fixture()
def postgres_engine(tmp_path: Path) -> Iterator[Engine]:
    for url, schema in postgres_schema("gp_migrations"):
        engine = create_db_engine(Settings(data_dir=tmp_path, database_url=url), schema=schema)
        yield engine
        engine.dispose()


def _check_up_and_down(engine: Engine) -> None:
    with pytest.raises(DatabaseError, match="grainproof db upgrade"):
        require_current_schema(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert table_names(engine) >= TABLES
    require_current_schema(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == [], f"the migrations and the sqlmodel tables disagree: {differences}"
    downgrade(engine, "base")
    assert not TABLES & table_names(engine)
    assert current_revision(engine) is None
    upgrade(engine)
    assert table_names(engine) >= TABLES


def test_migrations_go_up_and_down_on_sqlite(sqlite_engine: Engine) -> None:
    _check_up_and_down(sqlite_engine)


@pytest.mark.postgres
def test_migrations_go_up_and_down_on_postgresql(postgres_engine: Engine) -> None:
    _check_up_and_down(postgres_engine)


def test_sqlite_database_runs_in_wal_mode(sqlite_engine: Engine) -> None:
    upgrade(sqlite_engine)
    with sqlite_engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "gp")
    engine = create_db_engine(settings)
    upgrade(engine)
    assert (tmp_path / "gp" / "grainproof.db").is_file()
    engine.dispose()


def test_reviews_recorded_before_0002_still_verify_after_the_upgrade(sqlite_engine: Engine) -> None:
    """Upgrading adds who-decided columns to reviews; entries hashed before them must keep verifying."""
    import uuid

    from sqlmodel import Session

    from grainproof.store.audit import append_entry, review_payload, verification_payload, verify_chain
    from grainproof.store.tables import Review, Verification

    upgrade(sqlite_engine)
    with Session(sqlite_engine) as session:
        verification = Verification(
            id=str(uuid.uuid4()),
            lot_id="old-lot",
            species="soft_wheat",
            variety="apache",
            claim_json="{}",
            verdict_json="{}",
            plausibility=0.004,
            flagged=True,
            model_version="m1",
            vector=b"\0" * 32,
        )
        session.add(verification)
        session.flush()
        append_entry(
            session, kind="verification", record_id=verification.id, payload=verification_payload(verification)
        )
        review = Review(id=str(uuid.uuid4()), verification_id=verification.id, decision="confirmed_fraud", note="old")
        session.add(review)
        session.flush()
        append_entry(session, kind="review", record_id=review.id, payload=review_payload(review))
        session.commit()
    downgrade(sqlite_engine, "0001")
    upgrade(sqlite_engine)
    with Session(sqlite_engine) as session:
        assert verify_chain(session).ok
