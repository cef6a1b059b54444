"""Bad input never gets stored: every case answers 4xx with a JSON error naming the problem,
and the database and the photo store are unchanged afterwards."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from service_support import DIM, Service, bootstrap_reference, claim, make_world, start_service

from grainproof.store.tables import AuditEntry, IdempotencyRecord, ReferenceLot, Verification

MAX_UPLOAD_BYTES = 50_000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    client, runtime, keys = start_service(tmp_path_factory.mktemp("bad") / "data", max_upload_bytes=MAX_UPLOAD_BYTES)
    world = make_world()
    with client:
        model_id = bootstrap_reference(client, keys, world)
        yield Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)


def _vector(service: Service) -> list[float]:
    return service.world.vector("apache", "51", 2024, np.random.default_rng(0))


def _snapshot(service: Service) -> tuple[int, ...]:
    photos = service.runtime.settings.photos_dir
    stored_photos = sum(1 for p in photos.rglob("*") if p.is_file()) if photos.exists() else 0
    tables = (Verification, AuditEntry, IdempotencyRecord, ReferenceLot)
    return (*(service.count(t) for t in tables), stored_photos)


def _jpeg(size: tuple[int, int], *, noise: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    pixels = (
        rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        if noise
        else np.full((*size[::-1], 3), 128, np.uint8)
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _json_case(claim_data: Any, vectors: Any = "default") -> dict[str, Any]:
    return {"json": {"claim": claim_data, "vectors": vectors}}


FUTURE = (date.today() + timedelta(days=30)).isoformat()
BOWTIE = {"type": "Polygon", "coordinates": [[[4.0, 49.0], [4.1, 49.1], [4.1, 49.0], [4.0, 49.1], [4.0, 49.0]]]}

# (case id, request builder, expected status, words the error detail must contain)
CASES: list[tuple[str, Any, int, tuple[str, ...]]] = [
    (
        "missing_claim_fields",
        lambda s: _json_case({"lot_id": "x1"}, _vector(s)),
        422,
        ("claim.species is missing", "claim.variety is missing", "claim.origin is missing"),
    ),
    (
        "invalid_geojson_text",
        lambda s: _json_case({**claim("x2"), "origin": {"geometry": "{not json"}}, _vector(s)),
        422,
        ("GeoJSON",),
    ),
    (
        "self_intersecting_field_polygon",
        lambda s: _json_case({**claim("x3"), "origin": {"geometry": BOWTIE}}, _vector(s)),
        422,
        ("polygon", "Self-intersection"),
    ),
    (
        "geojson_of_wrong_type",
        lambda s: _json_case(
            {**claim("x4"), "origin": {"geometry": {"type": "LineString", "coordinates": [[4, 49], [5, 49]]}}},
            _vector(s),
        ),
        422,
        ("Polygon",),
    ),
    (
        "unknown_variety",
        lambda s: _json_case(claim("x5", variety="chevalier"), _vector(s)),
        422,
        ("chevalier", "apache"),
    ),
    (
        "future_harvest_date",
        lambda s: _json_case({**claim("x6"), "harvest_date": FUTURE}, _vector(s)),
        422,
        ("future",),
    ),
    (
        "malformed_harvest_date",
        lambda s: _json_case({**claim("x7"), "harvest_date": "25/07/2024"}, _vector(s)),
        422,
        ("YYYY-MM-DD",),
    ),
    (
        "wrong_vector_dimension",
        lambda s: _json_case(claim("x8"), [0.5] * (DIM + 3)),
        422,
        (f"{DIM + 3} values", f"expects {DIM}"),
    ),
    ("vector_with_text", lambda s: _json_case(claim("x9"), [0.1, "a"]), 422, ("numbers",)),
    ("missing_vectors", lambda s: {"json": {"claim": claim("x10")}}, 400, ("vectors",)),
    (
        "latitude_out_of_range",
        lambda s: _json_case({**claim("x11"), "origin": {"lon": 4.0, "lat": 123.0}}, _vector(s)),
        422,
        ("123",),
    ),
    (
        "point_in_the_sea",
        lambda s: _json_case({**claim("x12"), "origin": {"lon": -30.0, "lat": 45.0}}, _vector(s)),
        422,
        ("outside", "-30.0"),
    ),
    (
        "body_not_json",
        lambda s: {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        ("not valid JSON",),
    ),
    (
        "unknown_top_level_field",
        lambda s: {"json": {"claim": claim("x13"), "vectors": _vector(s), "x": 1}},
        400,
        ("Unknown field",),
    ),
    (
        "alpha_out_of_range",
        lambda s: {"json": {"claim": claim("x14"), "vectors": _vector(s), "alpha": 2}},
        400,
        ("alpha",),
    ),
    (
        "non_image_upload",
        lambda s: {
            "files": [("photos", ("tray.jpg", b"%PDF-1.4 not a photo", "image/jpeg"))],
            "data": {"claim": json.dumps(claim("x15"))},
        },
        422,
        ("tray.jpg",),
    ),
    (
        "photo_over_size_limit",
        lambda s: {
            "files": [("photos", ("big.jpg", _jpeg((400, 400), noise=True), "image/jpeg"))],
            "data": {"claim": json.dumps(claim("x16"))},
        },
        413,
        ("big.jpg", "limit"),
    ),
    (
        "multipart_without_photos",
        lambda s: {"data": {"claim": json.dumps(claim("x17"))}, "files": [("other", ("a.txt", b"x", "text/plain"))]},
        400,
        ("photos",),
    ),
    (
        "multipart_claim_not_json",
        lambda s: {"files": [("photos", ("a.jpg", _jpeg((80, 80)), "image/jpeg"))], "data": {"claim": "{lot_id: 1"}},
        400,
        ("claim", "JSON"),
    ),
    (
        "unit_vectors_of_another_dimension",
        lambda s: {"json": {"claim": claim("x18"), "vectors": _vector(s), "unit_vectors": [[0.1] * (DIM - 1)]}},
        422,
        ("unit_vectors[0]", f"{DIM - 1} values"),
    ),
    (
        "too_many_photos",
        lambda s: {
            "files": [("photos", (f"p{i}.jpg", _jpeg((80, 80)), "image/jpeg")) for i in range(21)],
            "data": {"claim": json.dumps(claim("x19"))},
        },
        400,
        ("21 photos", "at most 20"),
    ),
    (
        "unsupported_content_type",
        lambda s: {"content": b"lot_id=1", "headers": {"Content-Type": "text/plain"}},
        415,
        ("text/plain",),
    ),
]


@pytest.mark.parametrize(("name", "build", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_verification_request_is_rejected_with_a_named_problem_and_nothing_stored(
    service: Service, name: str, build: Any, status: int, words: tuple[str, ...]
) -> None:
    before = _snapshot(service)
    kwargs = build(service)
    headers = {**service.headers("intake"), **kwargs.pop("headers", {}), "Idempotency-Key": f"bad-{name}"}
    response = service.client.post("/v1/verifications", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert set(body) >= {"type", "title", "status", "detail", "instance"} and "Traceback" not in response.text
    assert body["status"] == status and body["instance"] == "/v1/verifications"
    for word in words:
        assert word.lower() in body["detail"].lower(), (word, body["detail"])
    assert _snapshot(service) == before


def test_claim_problems_are_all_reported_at_once(service: Service) -> None:
    bad = {"lot_id": "", "species": 3, "variety": "apache", "origin": {"lon": "east"}, "harvest_date": "2024-13-01"}
    response = service.client.post(
        "/v1/verifications", json={"claim": bad, "vectors": _vector(service)}, headers=service.headers("intake")
    )
    body = response.json()
    assert response.status_code == 422 and body["type"] == "https://grainproof.dev/problems/claim"
    for field in ("claim.lot_id", "claim.species", "claim.origin.lon", "claim.harvest_date"):
        assert field in body["detail"]
    pointers = [error["pointer"] for error in body["errors"]]
    assert pointers == ["#/claim/lot_id", "#/claim/species", "#/claim/harvest_date", "#/claim/origin/lon"]


def test_bulk_import_with_bad_rows_reports_every_row_and_writes_nothing(service: Service) -> None:
    header = "lot_id,species,variety,region,harvest_date," + ",".join(f"f_{i}" for i in range(DIM))
    good = "new1,soft_wheat,apache,51,2024-07-20," + ",".join(["0.1"] * DIM)
    future = f"new2,soft_wheat,apache,51,{FUTURE}," + ",".join(["0.1"] * DIM)
    text_feature = "new3,soft_wheat,apache,51,2024-07-20,abc" + ",0.1" * (DIM - 1)
    before = _snapshot(service)
    response = service.client.post(
        "/v1/reference-lots/import",
        content="\n".join([header, good, future, text_feature]).encode(),
        headers={**service.headers("admin"), "Content-Type": "text/csv"},
    )
    assert response.status_code == 400
    problems = [error["detail"] for error in response.json()["errors"]]
    assert len(problems) == 2 and problems[0].startswith("line 3") and problems[1].startswith("line 4")
    assert _snapshot(service) == before


def test_bulk_import_of_an_existing_lot_id_is_a_conflict_and_writes_nothing(service: Service) -> None:
    header = "lot_id,species,variety,region,harvest_date," + ",".join(f"f_{i}" for i in range(DIM))
    rows = [
        "fresh1,soft_wheat,apache,51,2024-07-20," + ",".join(["0.1"] * DIM),
        "ref0000,soft_wheat,apache,51,2024-07-20," + ",".join(["0.1"] * DIM),
    ]
    before = _snapshot(service)
    response = service.client.post(
        "/v1/reference-lots/import",
        content="\n".join([header, *rows]).encode(),
        headers={**service.headers("admin"), "Content-Type": "text/csv"},
    )
    assert response.status_code == 409 and "ref0000" in response.json()["detail"]
    assert _snapshot(service) == before


def test_reference_lot_of_another_dimension_is_rejected(service: Service) -> None:
    lot = {**claim("odd-dim"), "features": [0.1] * (DIM + 1)}
    response = service.client.post("/v1/reference-lots", json=lot, headers=service.headers("admin"))
    assert response.status_code == 422 and f"{DIM + 1} values" in response.json()["detail"]


def test_activating_a_model_that_is_not_ready_is_a_conflict(service: Service, tmp_path: Path) -> None:
    response = service.client.post("/v1/reference-models/no-such-model/activate", headers=service.headers("admin"))
    assert response.status_code == 404 and "no-such-model" in response.json()["detail"]


def test_unknown_verification_is_404_json(service: Service) -> None:
    response = service.client.get("/v1/verifications/nope", headers=service.headers("auditor"))
    assert response.status_code == 404 and response.json()["type"] == "https://grainproof.dev/problems/not_found"


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": 0}, "limit"),
        ({"status": "bogus"}, "status"),
        ({"flagged": "maybe"}, "flagged"),
        ({"cursor": "x"}, "cursor"),
    ],
)
def test_every_bad_query_parameter_is_the_same_400_validation_problem_naming_it(
    service: Service, params: dict[str, Any], parameter: str
) -> None:
    response = service.client.get("/v1/verifications", params=params, headers=service.headers("auditor"))
    body = response.json()
    assert response.status_code == 400 and body["type"] == "https://grainproof.dev/problems/validation"
    assert [error["parameter"] for error in body["errors"]] == [parameter]
    assert str(params[parameter]) in body["detail"]


def test_request_body_over_the_limit_is_413_json_and_nothing_stored(service: Service) -> None:
    settings = service.runtime.settings
    before = _snapshot(service)
    response = service.client.post(
        "/v1/verifications",
        content=b"x" * (settings.max_upload_bytes * settings.max_photos_per_lot + 2 * 1024 * 1024),
        headers=service.headers("intake", **{"Content-Type": "application/json"}),
    )
    assert response.status_code == 413
    assert response.json()["type"] == "https://grainproof.dev/problems/request_entity_too_large"
    assert f"{settings.max_upload_bytes:,} bytes" in response.json()["detail"]
    assert _snapshot(service) == before
