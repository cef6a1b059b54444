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

TABLES = {"api_key", "reference_lot", "reference_model", "verification", "review", "audit_entry", "idempotency_record"}


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
