"""The verification API end to end on SQLite: verdicts stored with their model version, the queue,
reviews and promotion, idempotent retries, roles, EPCIS export, probes and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from service_support import DIM, Service, bootstrap_reference, claim, make_world, start_service

from grainproof.store.tables import ReferenceLot, Review, Verification


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    client, runtime, keys = start_service(tmp_path_factory.mktemp("api") / "data")
    world = make_world()
    with client:
        model_id = bootstrap_reference(client, keys, world)
        yield Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)


def _verify(
    service: Service,
    lot_id: str,
    *,
    true_origin: str,
    declared: str,
    role: str = "intake",
    seed: int = 0,
    **headers: str,
):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    body = {"claim": claim(lot_id, region=declared), "vectors": service.world.vector("apache", true_origin, 2024, rng)}
    return service.client.post("/v1/verifications", json=body, headers=service.headers(role, **headers))


def test_genuine_claim_is_accepted_and_names_the_model_version(service: Service) -> None:
    response = _verify(service, "lot-genuine", true_origin="51", declared="51", seed=1)
    assert response.status_code == 201, response.text
    body = response.json()
    verdict = body["verdict"]
    assert not body["flagged"] and not verdict["flagged"]
    assert set(verdict) >= {
        "plausibility",
        "origin_plausibility",
        "season_plausibility",
        "alternatives",
        "reasons",
        "nearest_reference_lots",
        "declared_origin_unit",
        "model_version",
        "alpha",
    }
    model = service.client.get(f"/v1/reference-models/{service.model_id}", headers=service.headers("admin")).json()
    assert body["model_version"] == verdict["model_version"] == model["version"]
    assert body["status"] == "open" and body["site"] == "urn:epc:id:sgln:3010000.00001.0"
    assert response.headers["location"] == f"/v1/verifications/{body['id']}"


def test_far_origin_claim_is_flagged_with_the_true_origin_as_alternative(service: Service) -> None:
    body = _verify(service, "lot-far", true_origin="64", declared="51", seed=2).json()
    assert body["flagged"]
    assert body["verdict"]["alternatives"][0]["origin_unit"] == "64"


def test_verification_can_be_read_back_unchanged(service: Service) -> None:
    created = _verify(service, "lot-readback", true_origin="10", declared="10", seed=3).json()
    fetched = service.client.get(f"/v1/verifications/{created['id']}", headers=service.headers("auditor"))
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_queue_filters_flagged_open_lots_newest_first(service: Service) -> None:
    for i in range(3):
        _verify(service, f"lot-queue-{i}", true_origin="29", declared="02", seed=10 + i)
    page = service.client.get(
        "/v1/verifications",
        params={"flagged": "true", "status": "open", "limit": 2},
        headers=service.headers("auditor"),
    ).json()
    assert page["total"] >= 3 and len(page["items"]) == 2 and page["limit"] == 2 and page["has_more"]
    assert all(item["flagged"] and item["status"] == "open" for item in page["items"])
    assert page["items"][0]["created_at"] >= page["items"][1]["created_at"]
    second = service.client.get(
        "/v1/verifications",
        params={"flagged": "true", "status": "open", "limit": 2, "cursor": page["next_cursor"]},
        headers=service.headers("auditor"),
    ).json()
    assert second["items"] and not {i["id"] for i in second["items"]} & {i["id"] for i in page["items"]}
    assert second["items"][0]["created_at"] <= page["items"][1]["created_at"]


def test_queue_filters_by_site(service: Service) -> None:
    _verify(service, "lot-silo-2", true_origin="51", declared="51", role="intake2", seed=20)
    page = service.client.get("/v1/verifications", params={"site": "silo-2"}, headers=service.headers("auditor")).json()
    assert page["total"] == 1 and page["items"][0]["lot_id"] == "lot-silo-2"


def test_queue_filters_by_the_check_that_flagged_the_lot(service: Service) -> None:
    from grainproof.api.contract import FlaggedCheck
    from grainproof.domain import FLAGGED_CHECKS

    assert tuple(FlaggedCheck) == FLAGGED_CHECKS
    far = _verify(service, "lot-check-far", true_origin="29", declared="51", seed=23).json()
    assert "origin_season" in far["verdict"]["flagged_checks"]
    headers = service.headers("auditor")
    by_origin = service.client.get(
        "/v1/verifications", params={"flagged_check": "origin_season", "limit": 500}, headers=headers
    ).json()
    assert far["id"] in {i["id"] for i in by_origin["items"]} and all(i["flagged"] for i in by_origin["items"])
    by_purity = service.client.get("/v1/verifications", params={"flagged_check": "purity"}, headers=headers).json()
    assert far["id"] not in {i["id"] for i in by_purity["items"]}
    bad = service.client.get("/v1/verifications", params={"flagged_check": "colour"}, headers=headers)
    assert bad.status_code == 400


def test_intake_key_reads_only_its_own_verifications(service: Service) -> None:
    mine = _verify(service, "lot-mine", true_origin="51", declared="51", role="intake2", seed=21).json()
    other = _verify(service, "lot-other", true_origin="51", declared="51", role="intake", seed=22).json()
    listed = service.client.get("/v1/verifications", params={"limit": 500}, headers=service.headers("intake2")).json()
    assert mine["id"] in {i["id"] for i in listed["items"]}
    assert other["id"] not in {i["id"] for i in listed["items"]}
    assert service.client.get(f"/v1/verifications/{other['id']}", headers=service.headers("intake2")).status_code == 404


def test_same_idempotency_key_twice_creates_one_verification(service: Service) -> None:
    before = service.count(Verification)
    first = _verify(service, "lot-retry", true_origin="51", declared="51", seed=30, **{"Idempotency-Key": "k-1"})
    again = _verify(service, "lot-retry", true_origin="51", declared="51", seed=30, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["verdict"] == first.json()["verdict"]
    assert service.count(Verification) == before + 1


def test_idempotency_key_reused_for_another_body_is_a_conflict(service: Service) -> None:
    _verify(service, "lot-a", true_origin="51", declared="51", seed=31, **{"Idempotency-Key": "k-2"})
    before = service.count(Verification)
    clash = _verify(service, "lot-b", true_origin="51", declared="51", seed=32, **{"Idempotency-Key": "k-2"})
    assert clash.status_code == 409
    assert clash.json()["type"].endswith("/idempotency_conflict") and "k-2" in clash.json()["detail"]
    assert service.count(Verification) == before


def test_idempotency_keys_of_different_api_keys_do_not_collide(service: Service) -> None:
    first = _verify(service, "lot-k3a", true_origin="51", declared="51", seed=33, **{"Idempotency-Key": "k-3"})
    other = _verify(
        service, "lot-k3b", true_origin="51", declared="51", role="intake2", seed=34, **{"Idempotency-Key": "k-3"}
    )
    assert first.status_code == other.status_code == 201 and first.json()["id"] != other.json()["id"]


def test_request_without_key_is_401_and_health_and_the_api_description_are_open(service: Service) -> None:
    response = service.client.get("/v1/verifications")
    assert response.status_code == 401 and "API key" in response.json()["detail"]
    assert response.headers["www-authenticate"] == 'Bearer realm="grainproof"'
    wrong = service.client.get("/v1/verifications", headers={"Authorization": "Bearer gp_wrong"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert service.client.get("/health").json() == {"status": "ok"}
    assert service.client.get("/ready").json()["status"] == "ready"
    assert service.client.get("/schema/openapi.json").status_code == 200  # the description, not the data
    assert service.client.get("/metrics").status_code == 401


def test_intake_key_cannot_review_and_nothing_is_stored(service: Service) -> None:
    created = _verify(service, "lot-403", true_origin="64", declared="51", seed=40).json()
    before = service.count(Review)
    response = service.client.post(
        f"/v1/verifications/{created['id']}/reviews",
        json={"decision": "confirmed_fraud"},
        headers=service.headers("intake"),
    )
    assert response.status_code == 403 and "auditor" in response.json()["detail"]
    assert service.count(Review) == before


def test_intake_key_cannot_manage_reference_data(service: Service) -> None:
    assert service.client.post("/v1/reference-models", json={}, headers=service.headers("intake")).status_code == 403
    assert service.client.get("/v1/keys", headers=service.headers("auditor")).status_code == 403


def test_auditor_review_is_appended_and_closes_the_lot(service: Service) -> None:
    created = _verify(service, "lot-review", true_origin="64", declared="51", seed=41).json()
    response = service.client.post(
        f"/v1/verifications/{created['id']}/reviews",
        json={"decision": "confirmed_fraud", "note": "Seller admitted mixing lots."},
        headers=service.headers("auditor"),
    )
    assert response.status_code == 201, response.text
    detail = service.client.get(f"/v1/verifications/{created['id']}", headers=service.headers("auditor")).json()
    assert detail["status"] == "reviewed" and detail["decision"] == "confirmed_fraud"
    assert detail["reviews"][0]["note"] == "Seller admitted mixing lots."
    assert detail["verdict"] == created["verdict"]  # the verification itself is never updated


def test_false_alarm_review_promotes_the_lot_into_the_reference(service: Service) -> None:
    created = _verify(service, "lot-promote", true_origin="51", declared="51", seed=42).json()
    before = service.count(ReferenceLot)
    response = service.client.post(
        f"/v1/verifications/{created['id']}/reviews",
        json={"decision": "confirmed_genuine", "promote_to_reference": True},
        headers=service.headers("auditor"),
    )
    assert response.status_code == 201, response.text
    assert response.json()["promoted_reference_lot"] == "lot-promote"
    assert service.count(ReferenceLot) == before + 1
    lot = service.client.get("/v1/reference-lots/lot-promote", headers=service.headers("auditor")).json()
    assert lot["source"] == "review" and lot["verification_id"] == created["id"] and lot["dim"] == DIM


def test_confirmed_fraud_cannot_be_promoted(service: Service) -> None:
    created = _verify(service, "lot-no-promote", true_origin="64", declared="51", seed=43).json()
    before = (service.count(ReferenceLot), service.count(Review))
    response = service.client.post(
        f"/v1/verifications/{created['id']}/reviews",
        json={"decision": "confirmed_fraud", "promote_to_reference": True},
        headers=service.headers("auditor"),
    )
    assert response.status_code == 422 and "genuine" in response.json()["detail"]
    assert (service.count(ReferenceLot), service.count(Review)) == before


def test_unknown_review_decision_is_rejected(service: Service) -> None:
    created = _verify(service, "lot-bad-decision", true_origin="51", declared="51", seed=44).json()
    response = service.client.post(
        f"/v1/verifications/{created['id']}/reviews", json={"decision": "maybe"}, headers=service.headers("auditor")
    )
    assert response.status_code == 400 and "maybe" in response.json()["detail"]
    assert response.json()["errors"][0]["pointer"] == "#/decision"


def test_epcis_export_is_an_inspecting_object_event_with_the_verdict(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.runtime, "settings", replace(service.runtime.settings, gs1_gtin="09506000134352"))
    created = _verify(service, "LOT-7/B", true_origin="64", declared="51", seed=50).json()
    document = service.client.get(f"/v1/verifications/{created['id']}/epcis", headers=service.headers("auditor")).json()
    assert "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld" in document["@context"]
    assert document["type"] == "EPCISDocument" and document["schemaVersion"] == "2.0"
    (event,) = document["epcisBody"]["eventList"]
    assert event["type"] == "ObjectEvent" and event["action"] == "OBSERVE" and event["bizStep"] == "inspecting"
    assert event["eventTimeZoneOffset"] == "+00:00" and event["eventTime"].startswith(created["created_at"][:19])
    assert event["quantityList"][0]["epcClass"] == "https://id.gs1.org/01/09506000134352/10/LOT-7%2FB"
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:3010000.00001.0"}
    assert event["disposition"] == "non_conformant"
    inspection = event["grainproof:inspection"]
    assert inspection["grainproof:flagged"] is True
    # The variety check rides beside the origin's; the lot came without units, so it states no purity.
    assert inspection["grainproof:variety"] == "apache"
    assert inspection["grainproof:varietyPlausibility"] == created["verdict"]["variety_plausibility"]
    assert inspection["grainproof:flaggedChecks"] == created["verdict"]["flagged_checks"] != []
    assert "grainproof:purity" not in inspection


def test_region_set_is_served_as_geojson(service: Service) -> None:
    response = service.client.get("/v1/regions/fr-departements", headers=service.headers("auditor"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/geo+json")
    collection = response.json()
    assert collection["type"] == "FeatureCollection"
    codes = {f["properties"]["code"] for f in collection["features"]}
    assert {"51", "64", "2A"} <= codes
    assert service.client.get("/v1/regions/atlantis", headers=service.headers("auditor")).status_code == 404


def test_metrics_count_requests_and_verifications(service: Service) -> None:
    _verify(service, "lot-metrics", true_origin="51", declared="51", seed=60)
    text = service.client.get("/metrics", headers=service.headers("admin")).text

    assert (
        'grainproof_http_request_duration_seconds_count{method="POST",route="/v1/verifications",status="201"}' in text
    )
    assert 'grainproof_verdicts_total{flagged="false",species="soft_wheat",variety="apache"}' in text
    assert "grainproof_reference_lots " in text


def test_openapi_description_lists_the_v1_routes(service: Service) -> None:
    paths = service.client.get("/schema/openapi.json", headers=service.headers("auditor")).json()["paths"]
    assert {"/v1/verifications", "/v1/verifications/{verification_id}/reviews", "/v1/reference-models"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/verifications"]["post"]["requestBody"]["content"]


def test_keys_created_by_admin_work_once_shown(service: Service, tmp_path: Path) -> None:
    created = service.client.post(
        "/v1/keys", json={"role": "auditor", "name": "desk"}, headers=service.headers("admin")
    )
    assert created.status_code == 201
    secret = created.json()["key"]
    assert service.client.get("/v1/verifications", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    listed = service.client.get("/v1/keys", headers=service.headers("admin")).json()
    assert all("key" not in k and secret not in str(k) for k in listed)
    service.client.post(f"/v1/keys/{created.json()['id']}/revoke", headers=service.headers("admin"))
    assert service.client.get("/v1/verifications", headers={"X-API-Key": secret}).status_code == 401


def test_concurrent_retries_with_one_key_create_one_verification_on_sqlite(service: Service) -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = service.count(Verification)
    rng = np.random.default_rng(70)
    body = {"claim": claim("lot-race", region="51"), "vectors": service.world.vector("apache", "51", 2024, rng)}
    headers = service.headers("intake", **{"Idempotency-Key": "race-1"})

    def send(_: int) -> tuple[int, str]:
        response = service.client.post("/v1/verifications", json=body, headers=headers)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(send, range(8)))
    assert {status for status, _ in results} <= {200, 201}
    assert len({vid for _, vid in results}) == 1
    assert service.count(Verification) == before + 1


def test_alpha_is_the_services_setting_and_intake_keys_cannot_change_it(service: Service) -> None:
    # The party being checked used to set its own flag level: flagged at 0.05, passed at 0.000001.
    rng = np.random.default_rng(5)
    body = {"claim": claim("lot-alpha", region="51"), "vectors": service.world.vector("apache", "51", 2024, rng)}
    refused = service.client.post("/v1/verifications", json={**body, "alpha": 1e-6}, headers=service.headers("intake"))
    assert refused.status_code == 403, refused.text
    assert "GRAINPROOF_ALPHA" in refused.json()["detail"]
    assert not service.client.get("/v1/verifications?lot_id=lot-alpha", headers=service.headers("admin")).json()[
        "items"
    ]
    plain = service.client.post("/v1/verifications", json=body, headers=service.headers("intake"))
    verdict = plain.json()["verdict"]
    assert verdict["alpha"] == service.runtime.settings.alpha and verdict["alpha_source"] == "server"
    admin = service.client.post(
        "/v1/verifications",
        json={**body, "claim": claim("lot-alpha-admin", region="51"), "alpha": 0.2},
        headers=service.headers("admin"),
    )
    assert admin.status_code == 201, admin.text
    assert admin.json()["verdict"]["alpha"] == 0.2 and admin.json()["verdict"]["alpha_source"] == "request"


def test_a_service_configured_with_its_own_alpha_verifies_at_that_alpha(tmp_path: Path) -> None:
    """The running service's settings, not the process environment, set alpha and purity (the demo serves
    at 0.05 while GRAINPROOF_ALPHA says 0.01; its verdicts were made at 0.01)."""
    client, _runtime, keys = start_service(tmp_path / "data", alpha=0.05)
    world = make_world()
    with client:
        bootstrap_reference(client, keys, world)
        body = {
            "claim": claim("lot-own-alpha", region="51"),
            "vectors": world.vector("apache", "51", 2024, np.random.default_rng(2)),
        }
        response = client.post("/v1/verifications", json=body, headers={"Authorization": f"Bearer {keys['intake']}"})
    assert response.status_code == 201, response.text
    verdict = response.json()["verdict"]
    assert verdict["alpha"] == 0.05 and verdict["alpha_source"] == "server"
