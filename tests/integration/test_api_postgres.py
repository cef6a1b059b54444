"""The same service on PostgreSQL (a fresh schema per run): verify, retry idempotently, review,
and the audit chain holds; concurrent retries with one Idempotency-Key still create one record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from service_support import Service, bootstrap_reference, claim, make_world, postgres_schema, start_service

from grainproof.store.audit import verify_chain
from grainproof.store.database import session_scope
from grainproof.store.tables import AuditEntry, Verification

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    for url, schema in postgres_schema("gp_api"):
        client, runtime, keys = start_service(tmp_path_factory.mktemp("pg") / "data", database_url=url, schema=schema)
        world = make_world()
        with client:
            model_id = bootstrap_reference(client, keys, world)
            yield Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)


def _body(service: Service, lot_id: str, origin: str, seed: int) -> dict[str, object]:
    vector = service.world.vector("apache", origin, 2024, np.random.default_rng(seed))
    return {"claim": claim(lot_id, region="51"), "vectors": vector}


def test_verify_review_and_audit_on_postgresql(pg_service: Service) -> None:
    headers = pg_service.headers("intake", **{"Idempotency-Key": "pg-1"})
    first = pg_service.client.post("/v1/verifications", json=_body(pg_service, "pg-lot", "64", 1), headers=headers)
    again = pg_service.client.post("/v1/verifications", json=_body(pg_service, "pg-lot", "64", 1), headers=headers)
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert first.json()["flagged"]
    review = pg_service.client.post(
        f"/v1/verifications/{first.json()['id']}/reviews",
        json={"decision": "confirmed_fraud", "note": "pg"},
        headers=pg_service.headers("auditor"),
    )
    assert review.status_code == 201
    queue = pg_service.client.get(
        "/v1/verifications", params={"flagged": "true", "status": "reviewed"}, headers=pg_service.headers("auditor")
    ).json()
    assert [item["id"] for item in queue["items"]] == [first.json()["id"]]
    with session_scope(pg_service.runtime.engine) as session:
        assert verify_chain(session).ok


def test_concurrent_retries_with_one_key_create_one_verification_on_postgresql(pg_service: Service) -> None:
    before = pg_service.count(Verification)
    headers = pg_service.headers("intake", **{"Idempotency-Key": "pg-race"})
    body = _body(pg_service, "pg-race", "51", 2)

    def send(_: int) -> tuple[int, str]:
        response = pg_service.client.post("/v1/verifications", json=body, headers=headers)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(send, range(8)))
    assert {status for status, _ in results} <= {200, 201}
    assert len({vid for _, vid in results}) == 1
    assert pg_service.count(Verification) == before + 1
    with session_scope(pg_service.runtime.engine) as session:
        report = verify_chain(session)
    assert report.ok and report.entries == pg_service.count(AuditEntry)


def test_a_sync_by_cursor_and_the_epcis_feed_miss_nothing_under_concurrent_inserts_on_postgresql(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    monkeypatch.setattr(pg_service.runtime, "settings", replace(pg_service.runtime.settings, gs1_gtin="09506000134352"))
    auditor = pg_service.headers("auditor")

    def sync(cursor: str | None) -> tuple[list[str], str]:
        seen: list[str] = []
        while True:
            params = {"order": "oldest", "site": "pg-sync", "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = pg_service.client.get("/v1/verifications", params=params, headers=auditor).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return seen, str(cursor)

    def send(i: int) -> str:
        body = _body(pg_service, f"pg-sync-{i}", "51", 100 + i)
        body["claim"]["site"] = "pg-sync"  # type: ignore[index]
        response = pg_service.client.post("/v1/verifications", json=body, headers=pg_service.headers("intake"))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    seen, cursor = sync(None)
    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(max_workers=4) as pool:
        pending = pool.map(send, range(12))
        while len(seen) < 12 and time.monotonic() < deadline:  # read while the writers write
            found, cursor = sync(cursor)
            seen += found
        made = list(pending)
    assert sorted(seen) == sorted(made) and len(set(seen)) == len(seen)
    events = pg_service.client.get("/v1/epcis/events", params={"site": "pg-sync"}, headers=auditor).json()
    assert [e["eventID"] for e in events["epcisBody"]["eventList"]] == [f"urn:uuid:{vid}" for vid in seen]
