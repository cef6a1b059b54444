"""The API as an integrator meets it: an OpenAPI description typed enough to generate a client from,
RFC 9457 Problem Details for every error, and Prometheus metrics that count what really happened."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_support import Service, bootstrap_reference, claim, make_world, start_service

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    client, runtime, keys = start_service(tmp_path_factory.mktemp("contract") / "data", gs1_gtin="09506000134352")
    world = make_world()
    with client:
        model_id = bootstrap_reference(client, keys, world)
        yield Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)


@pytest.fixture(scope="module")
def openapi(service: Service) -> dict[str, Any]:
    response = service.client.get("/schema/openapi.json")  # no key: the description is public
    assert response.status_code == 200
    return dict(response.json())


def _operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def _ref(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def test_responses_are_typed_components(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    for name in ("Verification", "Verdict", "Review", "ReferenceLot", "ReferenceModel", "Key", "Problem", "Claim"):
        assert components[name]["type"] == "object" and components[name]["properties"], name
    paths = openapi["paths"]
    created = paths["/v1/verifications"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert _ref(created) == "Verification"
    assert _ref(components["Verification"]["properties"]["verdict"]) == "Verdict"
    listed = paths["/v1/verifications"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert _ref(listed) == "VerificationPage"


def test_an_idempotent_replay_is_a_documented_200(service: Service, openapi: dict[str, Any]) -> None:
    replay = openapi["paths"]["/v1/verifications"]["post"]["responses"]["200"]
    assert _ref(replay["content"]["application/json"]["schema"]) == "Verification"
    body = {"claim": claim("replayed"), "vectors": service.world.vector("apache", "51", 2024, np.random.default_rng(9))}
    headers = service.headers("intake", **{"Idempotency-Key": "contract-replay"})
    first = service.client.post("/v1/verifications", json=body, headers=headers)
    again = service.client.post("/v1/verifications", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200) and again.json() == first.json()


def test_closed_vocabularies_are_enums(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    assert set(components["ReviewDecision"]["enum"]) == {
        "confirmed_fraud",
        "false_alarm",
        "confirmed_genuine",
        "inconclusive",
    }
    assert set(components["Role"]["enum"]) == {"intake", "auditor", "admin"}
    assert set(components["VerificationStatus"]["enum"]) == {"open", "reviewed"}
    assert set(components["ModelStatus"]["enum"]) == {"queued", "building", "ready", "failed"}


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("POST", "/v1/verifications", {"400", "401", "403", "409", "413", "415", "422", "500"}),
        ("GET", "/v1/verifications/{verification_id}", {"400", "401", "404", "500"}),
        ("POST", "/v1/verifications/{verification_id}/reviews", {"400", "401", "403", "404", "409", "415"}),
        ("POST", "/v1/reference-lots", {"400", "401", "403", "409", "413", "415", "422"}),
        ("POST", "/v1/reference-models/{model_id}/activate", {"401", "403", "404", "409"}),
        ("GET", "/v1/epcis/events", {"400", "401", "409"}),
    ],
)
def test_every_error_status_is_documented_with_its_problem_body(
    openapi: dict[str, Any], method: str, path: str, statuses: set[str]
) -> None:
    responses = openapi["paths"][path][method.lower()]["responses"]
    assert statuses <= set(responses)
    for status in statuses:
        assert _ref(responses[status]["content"][PROBLEM]["schema"]) == "Problem"


def test_every_error_response_of_every_operation_is_a_problem(openapi: dict[str, Any]) -> None:
    for method, path, operation in _operations(openapi):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and not (path == "/ready" and status == "503"):
                assert list(response["content"]) == [PROBLEM], (method, path, status)


def test_photos_are_described_as_images(openapi: dict[str, Any]) -> None:
    content = openapi["paths"]["/v1/photos/{digest}"]["get"]["responses"]["200"]["content"]
    assert {"image/jpeg", "image/png"} <= set(content) and "application/json" not in content


def test_reference_lot_posts_describe_their_bodies(openapi: dict[str, Any]) -> None:
    lot = openapi["paths"]["/v1/reference-lots"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"lot_id", "species", "variety", "origin", "features"} <= set(lot["required"])
    manifest = openapi["paths"]["/v1/reference-lots/import"]["post"]["requestBody"]["content"]
    assert set(manifest) == {"text/csv", "multipart/form-data"}
    assert manifest["multipart/form-data"]["schema"]["properties"]["manifest"]["format"] == "binary"


def test_every_operation_and_parameter_is_described(openapi: dict[str, Any]) -> None:
    for method, path, operation in _operations(openapi):
        assert operation.get("description"), (method, path)
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (method, path, parameter["name"])
    queue = {p["name"] for p in openapi["paths"]["/v1/verifications"]["get"]["parameters"]}
    assert {"flagged", "status", "site", "species", "variety", "lot_id", "since", "cursor", "limit"} <= queue


def test_the_description_is_public_and_the_data_is_not(service: Service) -> None:
    assert service.client.get("/schema/openapi.json").status_code == 200
    response = service.client.get("/v1/verifications")
    assert response.status_code == 401 and response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_errors_are_problem_details_with_the_request_path_as_instance(service: Service) -> None:
    response = service.client.get("/v1/verifications/no-such-id", headers=service.headers("auditor"))
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "https://grainproof.dev/problems/not_found",
        "title": "No such resource.",
        "status": 404,
        "detail": "No verification with id 'no-such-id'.",
        "instance": "/v1/verifications/no-such-id",
    }


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/v1/verifications", "intake"),
        ("/v1/reference-lots", "admin"),
        ("/v1/reference-lots/import", "admin"),
        ("/v1/keys", "admin"),
    ],
)
def test_a_body_of_the_wrong_media_type_is_415(service: Service, path: str, role: str) -> None:
    response = service.client.post(
        path, content=b"<lot/>", headers=service.headers(role, **{"Content-Type": "application/xml"})
    )
    assert response.status_code == 415 and response.json()["type"].endswith("/unsupported_media_type")
    assert "application/xml" in response.json()["detail"]


def _samples(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = service.client.get("/metrics", headers=service.headers("admin")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _count(samples: dict[Any, float], route: str, status: str, method: str = "GET") -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples.get(("grainproof_http_request_duration_seconds_count", labels), 0.0)


def test_refused_and_unknown_requests_are_counted_with_their_real_status(service: Service) -> None:
    before = _samples(service)
    assert service.client.get("/v1/verifications").status_code == 401
    assert service.client.get("/v1/no-such-route", headers=service.headers("auditor")).status_code == 404
    after = _samples(service)
    assert _count(after, "/v1/verifications", "401") == _count(before, "/v1/verifications", "401") + 1
    assert _count(after, "unmatched", "404") == _count(before, "unmatched", "404") + 1
    assert _count(after, "/v1/verifications", "500") == 0


def test_latency_is_a_histogram_so_percentiles_can_be_computed(service: Service) -> None:
    service.client.get("/health")
    samples = _samples(service)
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "grainproof_http_request_duration_seconds_bucket" and dict(labels)["route"] == "/health"
    }
    assert len(buckets) > 5 and buckets["+Inf"] >= 1
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative


def test_verdicts_are_counted_by_flag_and_variety_and_model_builds_are_timed(service: Service) -> None:
    rng = np.random.default_rng(5)
    for lot, true_origin in (("m-1", "51"), ("m-2", "64")):
        body = {"claim": claim(lot, region="51"), "vectors": service.world.vector("apache", true_origin, 2024, rng)}
        assert service.client.post("/v1/verifications", json=body, headers=service.headers("intake")).status_code == 201
    samples = _samples(service)
    flagged = (("flagged", "true"), ("species", "soft_wheat"), ("variety", "apache"))
    accepted = (("flagged", "false"), ("species", "soft_wheat"), ("variety", "apache"))
    assert samples[("grainproof_verdicts_total", flagged)] >= 1
    assert samples[("grainproof_verdicts_total", accepted)] >= 1
    assert samples[("grainproof_model_build_duration_seconds_count", (("outcome", "ready"),))] == 1
    assert samples[("grainproof_reference_lots", ())] == 240
