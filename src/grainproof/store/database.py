"""Engines, sessions and migrations: a SQLite file in the data dir by default, PostgreSQL in production."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlmodel import Session

from grainproof.errors import GrainproofError
from grainproof.settings import Settings

try:
    import fcntl
except ImportError:  # not POSIX: threads still queue; processes fall back to SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class DatabaseError(GrainproofError):
    """The database is unreachable or not migrated to the schema this version needs."""

    status_code = 503


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` URLs (psycopg2 is not installed)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_db_engine(
    settings: Settings, *, url: str | None = None, schema: str | None = None, must_exist: bool = False
) -> Engine:
    """An engine for the settings' database; SQLite gets WAL mode and writer-serialising transactions.

    `schema` (PostgreSQL only) puts every table in that schema, so parallel test runs never collide.
    `must_exist` refuses a SQLite file that is not there (connecting would create an empty one): commands that
    only read or check a database must not leave an empty one behind in a mistyped data dir.
    """
    target = normalise_url(url or settings.sqlalchemy_url)
    parsed = make_url(target)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            if must_exist and not Path(parsed.database).is_file():
                raise DatabaseError(
                    f"There is no grainproof database at {parsed.database}. Set GRAINPROOF_DATA_DIR to the "
                    "service's data dir (or GRAINPROOF_DATABASE_URL to its database); `grainproof db upgrade` "
                    "creates a new one."
                )
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args["check_same_thread"] = False
        engine = create_engine(target, connect_args=connect_args)
        _configure_sqlite(engine)
        return engine
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    engine = create_engine(target, connect_args=connect_args)
    _ping_idle_connections(engine)
    return engine


#: A pooled connection idle for longer than this is pinged before it is handed out.
_PING_AFTER_IDLE_S = 5.0


def _ping_idle_connections(engine: Engine) -> None:
    """`pool_pre_ping`, but only for connections idle a while (a server restart or a network timeout may
    have closed them): a verification checks out four connections within milliseconds, and pinging each
    cost a round trip to the server every time."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["grainproof_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("grainproof_idle_since")
        if idle_since is None or time.monotonic() - idle_since < _PING_AFTER_IDLE_S:
            return  # new, or used moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool drops this connection and checks out another
            raise DisconnectionError(f"a pooled connection was closed: {exc}") from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is on disk (fsync of the WAL) before a request is answered; group commit
        # (grainproof.store.group_commit) shares that fsync between the requests of a batch.
        cursor.execute("PRAGMA synchronous=FULL")
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


class _SqliteWriterLock:
    """Writers of one SQLite file queue here, threads on a lock and processes on an flock of a file next
    to the database, rather than in SQLite's busy handler, whose back-off sleeps (up to 100 ms a try)
    made the slowest requests many times slower than the typical one. A waiting process wakes as soon
    as the holder releases; the kernel drops the flock of a process that dies."""

    def __init__(self, database: str | None) -> None:
        self._threads = threading.Lock()
        self._path = f"{database}-writer.lock" if database and fcntl is not None else None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            if self._path is None:
                yield
                return
            # Opened per hold (some microseconds): no descriptor outlives the database or leaks into a fork.
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock


_WRITER_LOCKS: dict[str, _SqliteWriterLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


@contextmanager
def writer_lock(engine: Engine) -> Iterator[None]:
    """Held around a write transaction: on SQLite one writer at a time across threads and processes;
    on PostgreSQL nothing (rows lock themselves, the audit chain takes an advisory lock)."""
    if engine.dialect.name != "sqlite":
        yield
        return
    database = engine.url.database
    path = str(Path(database).resolve()) if database and database != ":memory:" else None
    key = path or f"memory:{id(engine)}"
    with _WRITER_LOCKS_GUARD:
        lock = _WRITER_LOCKS.get(key)
        if lock is None:
            lock = _WRITER_LOCKS[key] = _SqliteWriterLock(path)
    with lock.hold():
        yield


@contextmanager
def session_scope(engine: Engine, *, lock_held: bool = False) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back entirely on any error.

    `lock_held`: the caller already holds `writer_lock(engine)` (group commit takes it before it
    gathers a batch).
    """
    lock: AbstractContextManager[None] = nullcontext() if lock_held else writer_lock(engine)
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


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A read-only Core connection, for the lookups every request makes: an ORM session's bookkeeping
    cost more than such a query."""
    with engine.execution_options(**{_READ_ONLY_OPTION: True}).connect() as connection:
        yield connection


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
