"""The auditor's desk on PostgreSQL: the queue's date filter and a decision recorded from the page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from service_support import Service, bootstrap_reference, claim, make_world, postgres_schema, start_service
from sqlmodel import select

from grainproof.store.audit import verify_chain
from grainproof.store.database import session_scope
from grainproof.store.tables import Review

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    for url, schema in postgres_schema("gp_desk"):
        data_dir = tmp_path_factory.mktemp("pgdesk") / "data"
        client, runtime, keys = start_service(data_dir, database_url=url, schema=schema)
        world = make_world()
        with client:
            model_id = bootstrap_reference(client, keys, world)
            service = Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)
            body = {
                "claim": claim("pg-desk-far", region="51"),
                "vectors": world.vector("apache", "64", 2024, np.random.default_rng(4)),
            }
            created = client.post("/v1/verifications", json=body, headers=service.headers("intake"))
            assert created.status_code == 201 and created.json()["flagged"], created.text
            client.post("/desk/login", data={"api_key": keys["auditor"]}, follow_redirects=False)
            yield service, created.json()["id"]


def test_queue_date_filter_on_postgresql(pg_desk: tuple[Service, str]) -> None:
    service, _ = pg_desk
    today = service.client.get("/desk/", params={"status": "all"}).text
    day = re.search(r"(\d{4}-\d{2}-\d{2}) \d{2}:\d{2} UTC", today)
    assert day and "pg-desk-far" in today
    assert "pg-desk-far" in service.client.get("/desk/", params={"date_from": day[1], "date_to": day[1]}).text
    assert "pg-desk-far" not in service.client.get("/desk/", params={"date_to": "2000-01-01"}).text


def test_decision_from_the_desk_on_postgresql(pg_desk: tuple[Service, str]) -> None:
    service, verification_id = pg_desk
    page = service.client.get(f"/desk/lots/{verification_id}").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    response = service.client.post(
        f"/desk/lots/{verification_id}/reviews",
        data={"csrf_token": token[1], "decision": "inconclusive", "note": "pg"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    with session_scope(service.runtime.engine) as session:
        reviews = session.exec(select(Review).where(Review.verification_id == verification_id)).all()
        assert [(r.decision, r.note) for r in reviews] == [("inconclusive", "pg")]
        assert verify_chain(session).ok
