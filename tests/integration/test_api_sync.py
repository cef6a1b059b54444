"""Incremental sync for ERPs and traceability systems: the queue and the EPCIS event feed page by cursor in
the order verifications and reviews were stored, filter by time, and skip nothing under concurrent inserts;
the EPCIS documents are valid against GS1's JSON Schema and expand as JSON-LD without losing a key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from pyld import jsonld
from service_support import Service, bootstrap_reference, claim, make_world, start_service

EPCIS_FILES = Path(__file__).resolve().parents[1] / "epcis"
EPCIS_CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
GRAINPROOF = "https://grainproof.dev/epcis/"
GTIN = "09506000134352"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    client, runtime, keys = start_service(tmp_path_factory.mktemp("sync") / "data", gs1_gtin=GTIN)
    world = make_world()
    with client:
        model_id = bootstrap_reference(client, keys, world)
        yield Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)


_seed = iter(range(1000, 100000))


def _verify(service: Service, lot_id: str, *, true_origin: str = "51", role: str = "intake", **fields: Any) -> dict:
    rng = np.random.default_rng(next(_seed))
    body = {
        "claim": claim(lot_id, region="51", **fields),
        "vectors": service.world.vector("apache", true_origin, 2024, rng),
    }
    response = service.client.post("/v1/verifications", json=body, headers=service.headers(role))
    assert response.status_code == 201, response.text
    return dict(response.json())


def _page(service: Service, **params: Any) -> dict[str, Any]:
    response = service.client.get("/v1/verifications", params=params, headers=service.headers("auditor"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _sync(service: Service, cursor: str | None, **params: Any) -> tuple[list[str], str]:
    """Everything stored after `cursor`, oldest first, page by page: the ids and the cursor to keep."""
    seen: list[str] = []
    while True:
        page = _page(service, order="oldest", limit=3, **params, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        assert cursor
        if not page["has_more"]:
            return seen, cursor


def test_since_keeps_what_was_received_at_or_after_a_moment(service: Service) -> None:
    first = _verify(service, "since-1", site="since-site")
    time.sleep(0.01)
    second = _verify(service, "since-2", site="since-site")
    page = _page(service, site="since-site", since=second["created_at"])
    assert [item["id"] for item in page["items"]] == [second["id"]] and page["total"] == 1
    both = _page(service, site="since-site", since=first["created_at"], until=second["created_at"])
    assert {item["id"] for item in both["items"]} == {first["id"], second["id"]}


def test_a_sync_gets_every_verification_once_with_inserts_between_pages_and_later(service: Service) -> None:
    made = [_verify(service, f"sync-{i}", site="sync-site")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = _page(service, order="oldest", site="sync-site", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
        made.append(_verify(service, f"sync-late-{len(made)}", site="sync-site")["id"])  # arrives mid-sync
    assert seen == made
    assert _sync(service, cursor, site="sync-site")[0] == []  # caught up: nothing twice
    newer = [_verify(service, f"sync-next-{i}", site="sync-site")["id"] for i in range(2)]
    assert _sync(service, cursor, site="sync-site")[0] == newer


def test_concurrent_inserts_are_never_skipped_by_a_syncing_reader(service: Service) -> None:
    stop = threading.Event()
    seen: list[str] = []

    def read() -> None:
        cursor: str | None = None
        while not stop.is_set():
            found, cursor = _sync(service, cursor, site="race-site")
            seen.extend(found)
        seen.extend(_sync(service, cursor, site="race-site")[0])

    reader = threading.Thread(target=read)
    reader.start()
    with ThreadPoolExecutor(max_workers=4) as pool:
        made = list(pool.map(lambda i: _verify(service, f"race-{i}", site="race-site")["id"], range(24)))
    stop.set()
    reader.join(timeout=60)
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))


def test_a_cursor_of_another_order_or_made_up_is_refused(service: Service) -> None:
    newest = _page(service, limit=1)["next_cursor"]
    response = service.client.get(
        "/v1/verifications", params={"order": "oldest", "cursor": newest}, headers=service.headers("auditor")
    )
    assert response.status_code == 400 and response.json()["errors"][0]["parameter"] == "cursor"


# --- EPCIS ---


def _events(service: Service, **params: Any) -> dict[str, Any]:
    response = service.client.get("/v1/epcis/events", params=params, headers=service.headers("auditor"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/ld+json")
    return dict(response.json())


def _review(service: Service, verification_id: str, decision: str) -> dict[str, Any]:
    response = service.client.post(
        f"/v1/verifications/{verification_id}/reviews", json={"decision": decision}, headers=service.headers("auditor")
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def exported(service: Service) -> list[dict[str, Any]]:
    """Verifications of every kind, reviews of every decision, as EPCIS documents (a feed page and singles)."""
    cursor = _events(service, limit=500)["grainproof:nextCursor"]
    flagged = _verify(service, "EX-FLAG/1", true_origin="64", quantity_kg=28000.0)
    accepted = _verify(service, "EX-OK-2", gtin="04006381333931", device="pixel-8")
    free_site = _verify(service, "lot with spaces and far too long", site="Silo de Reims")
    for decision in ("confirmed_fraud", "inconclusive"):
        _review(service, flagged["id"], decision)
    _review(service, accepted["id"], "false_alarm")
    feed = _events(service, cursor=cursor, limit=500)
    singles = [
        service.client.get(f"/v1/verifications/{v['id']}/epcis", headers=service.headers("auditor")).json()
        for v in (flagged, accepted, free_site)
    ]
    return [feed, *singles]


def test_the_feed_holds_inspections_and_reviews_in_the_order_they_were_stored(exported: list[dict[str, Any]]) -> None:
    events = exported[0]["epcisBody"]["eventList"]
    kinds = [("inspection" if "grainproof:inspection" in e else "review", e.get("disposition")) for e in events]
    assert kinds == [
        ("inspection", "non_conformant"),
        ("inspection", "conformant"),
        ("inspection", "conformant"),
        ("review", "non_conformant"),  # confirmed fraud
        ("review", None),  # inconclusive: no disposition stated
        ("review", "conformant"),  # false alarm
    ]
    assert [e["eventTime"] for e in events] == sorted(e["eventTime"] for e in events)
    first = exported[1]["epcisBody"]["eventList"]
    assert [e["eventID"] for e in first] == [events[0]["eventID"], events[3]["eventID"], events[4]["eventID"]]


def test_the_feed_pages_by_cursor(service: Service) -> None:
    everything = _events(service, limit=500)["epcisBody"]["eventList"]
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        document = _events(service, limit=2, **({"cursor": cursor} if cursor else {}))
        paged += document["epcisBody"]["eventList"]
        cursor = document["grainproof:nextCursor"]
        if not document["grainproof:hasMore"]:
            break
    assert [e["eventID"] for e in paged] == [e["eventID"] for e in everything]


def test_lot_numbers_are_gs1_lot_numbers_or_left_out(exported: list[dict[str, Any]]) -> None:
    events = exported[0]["epcisBody"]["eventList"]
    classes = [e["quantityList"][0]["epcClass"] for e in events[:3]]
    assert classes == [
        f"https://id.gs1.org/01/{GTIN}/10/EX-FLAG%2F1",
        "https://id.gs1.org/01/04006381333931/10/EX-OK-2",  # the claim's own GTIN
        f"https://id.gs1.org/01/{GTIN}",  # 32 characters with spaces: not a GS1 lot number
    ]
    assert events[0]["quantityList"][0] | {"quantity": 28000.0, "uom": "KGM"} == events[0]["quantityList"][0]
    assert events[2]["grainproof:inspection"]["grainproof:lotId"] == "lot with spaces and far too long"
    assert "readPoint" not in events[2] and events[1]["readPoint"] == {"id": "urn:epc:id:sgln:3010000.00001.0"}


def test_a_claim_with_a_gtin_and_a_lot_id_gs1_does_not_allow_is_refused(service: Service) -> None:
    body = {"claim": claim("L" * 22, gtin=GTIN), "vectors": [0.0] * 8}
    response = service.client.post("/v1/verifications", json=body, headers=service.headers("intake"))
    assert response.status_code == 422 and response.json()["errors"][0]["pointer"] == "#/claim/lot_id"
    assert "22 characters" in response.json()["detail"]


def test_export_without_a_configured_gtin_is_refused_naming_the_setting(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.runtime, "settings", replace(service.runtime.settings, gs1_gtin=None))
    response = service.client.get("/v1/epcis/events", headers=service.headers("auditor"))
    assert response.status_code == 409 and "GRAINPROOF_GS1_GTIN" in response.json()["detail"]
    own_gtin = _verify(service, "OWN-GTIN", gtin="04006381333931")
    single = service.client.get(f"/v1/verifications/{own_gtin['id']}/epcis", headers=service.headers("auditor"))
    assert single.status_code == 200  # a claim with its own GTIN needs none configured


def test_exported_documents_are_valid_against_gs1_epcis_json_schema(exported: list[dict[str, Any]]) -> None:
    schema = json.loads((EPCIS_FILES / "EPCIS-JSON-Schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    for document in exported:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, errors[:5]


def test_the_json_schema_check_catches_what_gs1_forbids(exported: list[dict[str, Any]]) -> None:
    schema = json.loads((EPCIS_FILES / "EPCIS-JSON-Schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    broken = json.loads(json.dumps(exported[1]))
    broken["epcisBody"]["eventList"][0]["verification"] = {"id": "x"}  # an extension key without a prefix
    assert list(validator.iter_errors(broken))


def _load_from_disk(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    if url != EPCIS_CONTEXT_URL:
        raise AssertionError(f"the JSON-LD processor asked for {url}; only GS1's EPCIS context is on disk")
    document = json.loads((EPCIS_FILES / "epcis-context.jsonld").read_text(encoding="utf-8"))
    return {"contextUrl": None, "documentUrl": url, "document": document}


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_exported_documents_expand_as_json_ld_with_every_extension_key_in_grainproofs_namespace(
    exported: list[dict[str, Any]],
) -> None:
    for document in exported:
        expanded = jsonld.expand(document, {"documentLoader": _load_from_disk})
        (node,) = expanded
        (body,) = node["https://ref.gs1.org/epcis/epcisBody"]
        events = body["https://ref.gs1.org/epcis/eventList"]
        assert len(events) == len(document["epcisBody"]["eventList"])
        for event, compact in zip(events, document["epcisBody"]["eventList"], strict=True):
            extension = next(k for k in compact if k.startswith("grainproof:"))
            (value,) = event[GRAINPROOF + extension.removeprefix("grainproof:")]
            # Every key of the extension expanded to the namespace: none dropped, none read as @id or @type.
            assert "@id" not in value and "@type" not in value
            assert sorted(value) == sorted(GRAINPROOF + k.removeprefix("grainproof:") for k in compact[extension])
            assert all(k.startswith(("@", GRAINPROOF)) for k in _keys(value))
            disposition = compact.get("disposition")
            if disposition:
                (stated,) = event["https://ref.gs1.org/epcis/disposition"]
                assert stated == {"@id": f"https://ref.gs1.org/cbv/Disp-{disposition}"}
