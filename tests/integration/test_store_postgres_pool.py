"""PostgreSQL connections in the pool: one the server closed while it sat idle is replaced, not handed out."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_support import postgres_schema
from sqlalchemy import create_engine, text

from grainproof.settings import Settings
from grainproof.store import database
from grainproof.store.database import create_db_engine


def test_a_pooled_connection_the_server_closed_is_replaced_after_idling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for url, schema in postgres_schema("gp_pool"):
        engine = create_db_engine(Settings(data_dir=tmp_path, database_url=url), schema=schema)
        admin = create_engine(url)
        try:
            with engine.connect() as connection:
                first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with admin.begin() as connection:  # the server ends the pooled session (a restart, a timeout)
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            monkeypatch.setattr(database, "_PING_AFTER_IDLE_S", 0.0)  # as if it had idled past the limit
            with engine.connect() as connection:
                second = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            assert second != first
        finally:
            admin.dispose()
            engine.dispose()
