"""Group commit: concurrent requests' writes share one transaction, so one fsync serves a whole batch.

A durable commit costs an fsync (SQLite's WAL under `synchronous=FULL`, PostgreSQL's WAL flush), and on
a busy disk an fsync takes milliseconds while the writer lock is held, so one commit per request caps
the service at a few hundred requests a second however fast the rest is. Here the callers of one
process take turns as the leader: the leader takes the writer lock, gathers every write queued by then
(its own and those of callers still waiting), runs them in one transaction, commits, and hands each
caller its outcome. A caller returns only once its writes are committed; a write that fails fails
alone (the batch is retried one write at a time) and raises in its own caller. The leader is a
caller's own thread, so a write costs no hand-over to another thread when nobody else is writing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from grainproof.store.database import session_scope, writer_lock

T = TypeVar("T")

#: Writes per transaction at most: bounds how long one batch holds the writer lock.
MAX_BATCH = 64


@dataclass(slots=True)
class _Write:
    work: Callable[[Session], Any]
    done: bool = False
    ok: bool = False
    outcome: Any = None


class GroupCommitter:
    """Runs `work(session)` callables in transactions shared by the writes queued at the same time."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queued: list[_Write] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()

    def run(self, work: Callable[[Session], T]) -> T:
        """`work`'s result once the transaction holding its writes has committed; its error if it failed.

        `work` writes through the session it is given and opens no transaction of its own; it may run
        twice (see `_commit`), so it has no effects outside the database.
        """
        write = _Write(work)
        with self._queue_lock:
            self._queued.append(write)
        while not write.done:
            # Whoever holds the leader lock commits a batch; a caller whose write went into that batch
            # finds it done when the lock comes free, the others lead the next batch.
            with self._leader:
                if not write.done:
                    self._lead()
        if not write.ok:
            raise write.outcome
        return write.outcome  # type: ignore[no-any-return]

    def queued(self) -> int:
        """Writes waiting for a leader to take them."""
        with self._queue_lock:
            return len(self._queued)

    def _lead(self) -> None:
        # The batch is gathered once the writer lock is won: whatever queued while it waited goes in too.
        with writer_lock(self.engine):
            with self._queue_lock:
                batch, self._queued = self._queued[: self.max_batch], self._queued[self.max_batch :]
            try:
                outcomes = self._commit(batch)
            except BaseException as exc:  # interrupted: no caller of this batch may wait for ever
                outcomes = [(False, exc)] * len(batch)
                raise
            finally:
                for write, (ok, outcome) in zip(batch, outcomes, strict=True):
                    write.ok, write.outcome, write.done = ok, outcome, True

    def _commit(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        """(True, result) or (False, error) per write. A write that fails takes its batch's transaction
        with it; then each write of the batch runs again in a transaction of its own, so only it fails
        (rare: an Idempotency-Key race; cheaper than a savepoint around every write)."""
        try:
            with session_scope(self.engine, lock_held=True) as session:
                results = [write.work(session) for write in batch]
                session.flush()
        except Exception as exc:
            if len(batch) == 1:
                return [(False, exc)]
            return [self._commit([write])[0] for write in batch]
        return [(True, result) for result in results]
