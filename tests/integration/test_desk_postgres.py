"""The auditor's desk on PostgreSQL: a named auditor's login, the queue's date filter and sort, and decisions
recorded from the page under the four-eyes rule."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from service_support import (
    DESK_USERS,
    Service,
    bootstrap_reference,
    claim,
    create_desk_users,
    make_world,
    postgres_schema,
    start_service,
)
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
        create_desk_users(runtime)
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
            _login(service, "alice")
            yield service, created.json()["id"]


def _login(service: Service, username: str) -> None:
    service.client.cookies.clear()
    response = service.client.post(
        "/desk/login", data={"username": username, "password": DESK_USERS[username][0]}, follow_redirects=False
    )
    assert response.status_code == 303, response.text


def _record(service: Service, verification_id: str, decision: str, note: str) -> int:
    page = service.client.get(f"/desk/lots/{verification_id}").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    response = service.client.post(
        f"/desk/lots/{verification_id}/reviews",
        data={"csrf_token": token[1], "decision": decision, "note": note},
        follow_redirects=False,
    )
    return int(response.status_code)


def test_queue_date_filter_on_postgresql(pg_desk: tuple[Service, str]) -> None:
    service, _ = pg_desk
    today = service.client.get("/desk/", params={"status": "all"}).text
    day = re.search(r"(\d{4}-\d{2}-\d{2}) \d{2}:\d{2} UTC", today)
    assert day and "pg-desk-far" in today
    assert "pg-desk-far" in service.client.get("/desk/", params={"date_from": day[1], "date_to": day[1]}).text
    assert "pg-desk-far" not in service.client.get("/desk/", params={"date_to": "2000-01-01"}).text
    assert "pg-desk-far" in service.client.get("/desk/", params={"status": "all", "sort": "least_plausible"}).text
    # The check filter reads the stored verdict's JSON text the same way on PostgreSQL.
    assert "pg-desk-far" in service.client.get("/desk/", params={"status": "all", "check": "origin_season"}).text
    assert "pg-desk-far" not in service.client.get("/desk/", params={"status": "all", "check": "purity"}).text


def test_decisions_from_the_desk_on_postgresql_follow_the_four_eyes_rule(pg_desk: tuple[Service, str]) -> None:
    service, verification_id = pg_desk
    _login(service, "alice")
    assert _record(service, verification_id, "false_alarm", "pg") == 303
    assert _record(service, verification_id, "confirmed_fraud", "changed my mind") == 409
    _login(service, "bob")
    assert _record(service, verification_id, "confirmed_fraud", "second look") == 303
    with session_scope(service.runtime.engine) as session:
        reviews = session.exec(
            select(Review).where(Review.verification_id == verification_id).order_by(Review.created_at)
        ).all()
        assert [(r.decision, r.reviewer_user) for r in reviews] == [
            ("false_alarm", "alice"),
            ("confirmed_fraud", "bob"),
        ]
        assert reviews[1].overrides == reviews[0].id
        assert verify_chain(session).ok
