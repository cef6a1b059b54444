"""Group commit: concurrent writes share transactions, yet each caller returns only once its own writes
are committed, a failing write fails alone, and the audit chain stays whole. Writers of one SQLite
file also exclude each other across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, event, func
from sqlmodel import Session, select

from grainproof.settings import Settings
from grainproof.store.arrays import encode_array
from grainproof.store.audit import append_entry, verification_payload, verify_chain
from grainproof.store.database import create_db_engine, read_scope, session_scope, upgrade, writer_lock
from grainproof.store.group_commit import GroupCommitter
from grainproof.store.tables import AuditEntry, Verification

WRITERS = 8


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(Settings(data_dir=tmp_path))
    upgrade(engine)
    yield engine
    engine.dispose()


def _count_commits(engine: Engine) -> list[int]:
    commits = [0]

    @event.listens_for(engine, "commit")
    def _count(_connection: Any) -> None:
        commits[0] += 1

    return commits


def _verification(record_id: str) -> Verification:
    return Verification(
        id=record_id,
        lot_id=f"lot-{record_id}",
        species="soft_wheat",
        variety="apache",
        claim_json="{}",
        verdict_json="{}",
        plausibility=0.5,
        flagged=False,
        model_version="m1",
        vector=encode_array(np.arange(4.0)),
    )


def _append(record_id: str, *, fail: bool = False) -> Any:
    """A verification's writes as the service makes them: its row, then its audit entry."""

    def work(session: Session) -> int:
        row = _verification(record_id)
        session.add(row)
        session.flush()
        entry = append_entry(session, kind="verification", record_id=row.id, payload=verification_payload(row))
        if fail:
            raise ValueError(f"{record_id} failed after appending")
        return entry.seq

    return work


def _run_together(committer: GroupCommitter, works: list[Any]) -> list[tuple[bool, Any]]:
    """Run the first write, hold it until every other write is queued behind it, then let all go."""
    gate = threading.Event()
    outcomes: list[tuple[bool, Any]] = [(False, None)] * len(works)

    def call(i: int, work: Any) -> None:
        try:
            outcomes[i] = (True, committer.run(work))
        except Exception as exc:
            outcomes[i] = (False, exc)

    first = threading.Thread(target=call, args=(0, _gated(works[0], gate)))
    first.start()
    time.sleep(0.2)  # the first write now leads and waits at its gate
    others = [threading.Thread(target=call, args=(i, work)) for i, work in enumerate(works) if i > 0]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while committer.queued() < len(others) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for thread in [first, *others]:
        thread.join(10)
    return outcomes


def _gated(work: Any, gate: threading.Event) -> Any:
    def gated(session: Session) -> Any:
        gate.wait(10)
        return work(session)

    return gated


def test_writes_queued_together_share_one_commit_and_all_land(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    commits = _count_commits(engine)
    outcomes = _run_together(committer, [_append(f"v{i}") for i in range(WRITERS)])
    assert all(ok for ok, _ in outcomes), outcomes
    assert sorted(seq for _, seq in outcomes) == list(range(1, WRITERS + 1))
    assert commits[0] == 2  # the first write alone, then the seven queued behind it together
    with read_scope(engine) as session:
        report = verify_chain(session)
    assert report.ok and report.entries == WRITERS


def test_a_failing_write_fails_alone_and_the_chain_stays_contiguous(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    works = [_append(f"v{i}", fail=(i == 3)) for i in range(WRITERS)]
    outcomes = _run_together(committer, works)
    failed = [i for i, (ok, _) in enumerate(outcomes) if not ok]
    assert failed == [3] and isinstance(outcomes[3][1], ValueError)
    with read_scope(engine) as session:
        report = verify_chain(session)
        ids = set(session.exec(select(AuditEntry.record_id)).all())
    assert report.ok and report.entries == WRITERS - 1
    assert "v3" not in ids


def test_a_write_is_visible_to_other_connections_when_run_returns(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    seen_inside: list[int] = []

    def work(session: Session) -> None:
        _append("v0")(session)
        with read_scope(engine) as other:  # another connection: nothing shows before the commit
            seen_inside.append(other.exec(select(func.count()).select_from(AuditEntry)).one())

    committer.run(work)
    with read_scope(engine) as session:
        after = session.exec(select(func.count()).select_from(AuditEntry)).one()
    assert seen_inside == [0] and after == 1


def test_a_lone_failing_write_raises_its_own_error_and_the_next_write_goes_on(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    with pytest.raises(ValueError, match="v0 failed"):
        committer.run(_append("v0", fail=True))
    assert committer.run(_append("v1")) == 1


def test_the_writer_lock_excludes_another_process(engine: Engine) -> None:
    lock_file = f"{Path(str(engine.url.database)).resolve()}-writer.lock"
    probe = (
        "import fcntl, os, sys\n"
        f"fd = os.open({lock_file!r}, os.O_RDWR)\n"
        "try:\n"
        "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    sys.exit(3)\n"
    )
    with writer_lock(engine):
        held = subprocess.run([sys.executable, "-c", probe], check=False).returncode
    free = subprocess.run([sys.executable, "-c", probe], check=False).returncode
    assert (held, free) == (3, 0)
    with session_scope(engine) as session:  # and the lock is usable again afterwards
        _append("v0")(session)
