"""Engines, sessions and migrations: a SQLite file in the data dir by default, PostgreSQL in production."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlmodel import Session

from grainproof.errors import GrainproofError
from grainproof.settings import Settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class DatabaseError(GrainproofError):
    """The database is unreachable or not migrated to the schema this version needs."""

    status_code = 503


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` URLs (psycopg2 is not installed)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_db_engine(settings: Settings, *, url: str | None = None, schema: str | None = None) -> Engine:
    """An engine for the settings' database; SQLite gets WAL mode and writer-serialising transactions.

    `schema` (PostgreSQL only) puts every table in that schema, so parallel test runs never collide.
    """
    target = normalise_url(url or settings.sqlalchemy_url)
    parsed = make_url(target)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args["check_same_thread"] = False
        engine = create_engine(target, connect_args=connect_args)
        _configure_sqlite(engine)
        return engine
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    return create_engine(target, connect_args=connect_args, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: two requests appending to the audit chain
        # queue behind each other instead of failing with SQLITE_BUSY half-way. Read-only scopes
        # use a deferred BEGIN: in WAL mode readers never wait for the writer.
        if connection.get_execution_options().get(_READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


#: Execution option marking a read-only scope (SQLite then skips the write lock).
_READ_ONLY_OPTION = "grainproof_read_only"
#: Writers of one process queue on this lock rather than in SQLite's busy handler, whose back-off sleeps
#: (up to 100 ms a try) made the slowest requests many times slower than the typical one.
_SQLITE_WRITE_LOCK = threading.Lock()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back entirely on any error."""
    lock = _SQLITE_WRITE_LOCK if engine.dialect.name == "sqlite" else nullcontext()
    with lock, Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A read-only transaction: a consistent snapshot that never waits for writers (SQLite WAL)."""
    # Closing the session ends the transaction without expiring what was read, so results stay usable.
    with Session(engine.execution_options(**{_READ_ONLY_OPTION: True}), expire_on_commit=False) as session:
        yield session


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to `revision` (default: the newest)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database down to `revision` (default: empty)."""
    from alembic import command

    command.downgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest migration shipped with this version."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://")))
    head = script.get_current_head()
    assert head is not None
    return head


def require_current_schema(engine: Engine) -> None:
    """DatabaseError unless the database is migrated to this version's newest migration."""
    try:
        current = current_revision(engine)
    except Exception as exc:  # any driver error: the user needs the URL and the reason
        raise DatabaseError(f"Cannot reach the database at {engine.url!r}: {exc}") from None
    if current != head_revision():
        raise DatabaseError(
            f"The database is at migration {current or 'none'}, this version needs {head_revision()}: "
            "run `grainproof db upgrade`."
        )


def table_names(engine: Engine) -> set[str]:
    """Names of the tables that exist (for migration tests and `grainproof db status`)."""
    return set(inspect(engine).get_table_names())
