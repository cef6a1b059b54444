"""The calibration monitor through the API: verdicts from a phone the reference never saw raise a
low-confidence alert for that phone, an auditor acknowledges it (audit log), blind samples enter the
queue marked and their reviews feed the missed-fraud estimate, staleness and /metrics report."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

from grainproof.store.audit import verify_chain
from grainproof.store.database import read_scope
from grainproof.store.tables import AlertAcknowledgement, BlindSample


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service on SQLite and on PostgreSQL (skipped when no server answers), with 60 lots verified."""
    if request.param == "sqlite":
        yield from _with_lots(tmp_path_factory.mktemp("monitor") / "data", {})
        return
    for url, schema in postgres_schema("gp_monitor"):
        yield from _with_lots(tmp_path_factory.mktemp("monitor-pg") / "data", {"database_url": url, "schema": schema})


def _with_lots(data_dir: Path, database: dict[str, Any]) -> Iterator[Service]:
    # Every unflagged lot is a blind sample here, so a handful of lots exercises the whole path.
    client, runtime, keys = start_service(data_dir, blind_audit_rate=1.0, **database)
    create_desk_users(runtime)
    world = make_world()
    with client:
        model_id = bootstrap_reference(client, keys, world)
        rng = np.random.default_rng(3)
        for i in range(60):
            # The first 20 lots come from the reference's phone; then two phones it never saw join.
            device = "phoneA" if i < 20 else "phoneZ" if i < 40 else "phoneY"
            body = {
                "claim": claim(f"lot-{i:03d}", device=device),
                "vectors": world.vector("apache", "51", 2024, rng),
            }
            response = client.post(
                "/v1/verifications", json=body, headers={"Authorization": f"Bearer {keys['intake']}"}
            )
            assert response.status_code == 201, response.text
        yield Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)


def test_monitor_counts_every_verdict_by_phone_and_week(service: Service) -> None:
    response = service.client.get("/v1/monitor/calibration?dimension=phone", headers=service.headers("auditor"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["lots"] == 60
    by_group = {(g["kind"], g["group"]): g for g in report["groups"]}
    assert by_group[("flag_rate", "phoneA")]["lots"] == 20
    assert by_group[("low_confidence", "phoneZ")]["events"] == 20  # each carries the unseen-phone warning
    assert sum(w["lots"] for w in report["weeks"]) == 60
    for week in report["weeks"]:
        assert 0.0 <= week["alpha_band"][0] <= week["alpha_band"][1] <= 1.0


def test_desk_monitor_page_shows_alerts_and_plots_and_acknowledges_one(service: Service) -> None:
    client = service.client
    client.cookies.clear()
    login = client.post(
        "/desk/login",
        data={"username": "alice", "password": DESK_USERS["alice"][0], "next": "/desk/monitor"},
        follow_redirects=False,
    )
    assert login.status_code == 303
    page = client.get("/desk/monitor")
    assert page.status_code == 200
    assert "phone phoneY" in page.text and "Blind audits" in page.text and "Reference staleness" in page.text
    for dimension in ("overall", "site", "phone", "variety", "model_version"):
        assert f'src="/desk/monitor/plots/{dimension}.png"' in page.text
        image = client.get(f"/desk/monitor/plots/{dimension}.png")
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    done = client.post(
        "/desk/monitor/acknowledge",
        data={"csrf_token": csrf.group(1), "alert_key": "low_confidence:phone:phoneY", "note": "checked"},
        follow_redirects=True,
    )
    assert done.status_code == 200 and "acknowledged" in done.text
    assert "phone phoneY" not in done.text.split('id="plots"')[0].split('id="alerts"')[1]
    forged = client.post(
        "/desk/monitor/acknowledge", data={"csrf_token": "x", "alert_key": "low_confidence:phone:phoneZ"}
    )
    assert forged.status_code in (400, 403)
    client.cookies.clear()


def test_unseen_phone_raises_a_low_confidence_alert_which_an_auditor_acknowledges(service: Service) -> None:
    alerts = service.client.get("/v1/monitor/alerts", headers=service.headers("auditor")).json()
    keys = {a["key"] for a in alerts}
    assert "low_confidence:phone:phoneZ" in keys
    assert "low_confidence:phone:phoneA" not in keys
    metrics = service.client.get("/metrics", headers=service.headers("admin")).text
    assert 'grainproof_monitor_alert{dimension="phone",group="phoneZ",kind="low_confidence"} 1.0' in metrics
    acknowledged = service.client.post(
        "/v1/monitor/alerts/low_confidence:phone:phoneZ/acknowledge",
        json={"note": "new phone at silo 1; reference lots ordered"},
        headers=service.headers("auditor"),
    )
    assert acknowledged.status_code == 201, acknowledged.text
    after = {a["key"] for a in service.client.get("/v1/monitor/alerts", headers=service.headers("auditor")).json()}
    assert "low_confidence:phone:phoneZ" not in after
    assert service.count(AlertAcknowledgement) == 2  # one from the desk, one from the API
    with read_scope(service.runtime.engine) as session:
        report = verify_chain(session)
    assert report.ok, report.problem


def test_acknowledging_an_alert_that_is_not_raised_is_404_and_intake_cannot_read_the_monitor(service: Service) -> None:
    missing = service.client.post(
        "/v1/monitor/alerts/flag_rate:site:nowhere/acknowledge", json={}, headers=service.headers("auditor")
    )
    assert missing.status_code == 404
    malformed = service.client.post(
        "/v1/monitor/alerts/nonsense/acknowledge", json={}, headers=service.headers("admin")
    )
    assert malformed.status_code in (400, 422)
    assert service.client.get("/v1/monitor/alerts", headers=service.headers("intake")).status_code == 403


def test_blind_samples_enter_the_queue_marked_and_their_reviews_estimate_missed_frauds(service: Service) -> None:
    blind_total = service.count(BlindSample)
    assert blind_total > 0
    queue = service.client.get(
        "/v1/verifications?flagged=true&blind_samples=true&limit=100", headers=service.headers("auditor")
    ).json()
    marked = [item for item in queue["items"] if item["blind_sample"]]
    assert len(marked) == blind_total and all(not item["flagged"] for item in marked)
    intake_view = service.client.get("/v1/verifications?limit=100", headers=service.headers("intake")).json()
    assert not any(item["blind_sample"] for item in intake_view["items"])
    for item, decision in zip(
        marked[:4], ("confirmed_genuine", "confirmed_genuine", "confirmed_genuine", "confirmed_fraud"), strict=True
    ):
        review = service.client.post(
            f"/v1/verifications/{item['id']}/reviews", json={"decision": decision}, headers=service.headers("auditor")
        )
        assert review.status_code == 201, review.text
    report = service.client.get("/v1/monitor/blind-audit", headers=service.headers("auditor")).json()
    overall = next(e for e in report["estimates"] if e["period"] == "all" and e["site"] == "all")
    missed = overall["missed_fraud_share"]
    assert (missed["events"], missed["reviewed"]) == (1, 4)
    assert missed["interval"][0] < 0.25 < missed["interval"][1]


def test_reference_staleness_lists_each_variety(service: Service) -> None:
    report = service.client.get("/v1/monitor/reference-staleness", headers=service.headers("auditor")).json()
    rows = {row["variety"]: row for row in report["varieties"]}
    assert set(rows) == {"apache", "rubisko"}
    assert rows["apache"]["verifications"] == 60
    assert rows["apache"]["newest_season"] == 2024
    assert {s["season"] for s in rows["apache"]["seasons"]} == {2023, 2024}
