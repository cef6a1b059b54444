"""Reads never queue behind a writer on SQLite (WAL), so a busy intake does not slow every lookup."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlmodel import select

from grainproof.settings import Settings
from grainproof.store.database import create_db_engine, read_scope, session_scope, upgrade
from grainproof.store.tables import ApiKey


def test_read_scope_does_not_wait_for_a_writer_holding_the_lock(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    engine = create_db_engine(settings)
    upgrade(engine)
    with session_scope(engine) as session:  # the WAL file exists once something was written
        session.add(ApiKey(name="k", role="intake", key_hash="h" * 64, prefix="gp_h"))
    writer = sqlite3.connect(tmp_path / "grainproof.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.perf_counter()
        with read_scope(engine) as session:
            keys = session.exec(select(ApiKey)).all()
        waited = time.perf_counter() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        engine.dispose()
    assert [k.name for k in keys] == ["k"]
    assert waited < 1.0  # a write-locking BEGIN would wait for the 30 s busy timeout
