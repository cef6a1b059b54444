"""Pure parts of the API: claim parsing never fails with anything but a ClaimError, a parsed claim
survives storage unchanged, and the EPCIS identifiers follow GS1's rules."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.api.epcis import epcis_document, lgtin_uri
from grainproof.api.errors import error_kind
from grainproof.api.schemas import claim_from_payload, gtin_check_digit_ok, parse_claim, parse_geojson
from grainproof.errors import ClaimError, UnknownVarietyError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
claim_like = st.fixed_dictionaries(
    {},
    optional={
        "lot_id": json_values | st.text(max_size=30),
        "species": json_values | st.just("soft_wheat"),
        "variety": json_values | st.just("apache"),
        "harvest_date": json_values | st.dates().map(date.isoformat),
        "origin": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "lon": json_values | st.floats(-200, 200),
                "lat": json_values | st.floats(-100, 100),
                "region": json_values,
                "geometry": json_values,
            },
        ),
        "gtin": json_values | st.from_regex(r"\A[0-9]{14}\Z"),
    },
)


@given(data=json_values | claim_like)
def test_parsing_any_json_either_gives_a_claim_or_a_claim_error(data: Any) -> None:
    try:
        parsed = parse_claim(data, today=date(2026, 1, 1))
    except ClaimError as exc:
        assert str(exc).endswith(".")
    else:
        assert parsed.claim.lot_id and parsed.claim.species and parsed.claim.variety


@given(
    lot_id=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
        str.strip
    ),
    lon=st.floats(-5, 9),
    lat=st.floats(41, 51),
    harvest=st.dates(date(2000, 1, 1), date(2025, 12, 31)),
)
def test_a_parsed_claim_survives_storage_unchanged(lot_id: str, lon: float, lat: float, harvest: date) -> None:
    data = {
        "lot_id": lot_id,
        "species": "soft_wheat",
        "variety": "apache",
        "origin": {"lon": lon, "lat": lat},
        "harvest_date": harvest.isoformat(),
    }
    parsed = parse_claim(data, today=date(2026, 1, 1))
    stored = json.loads(json.dumps(parsed.payload))
    assert claim_from_payload(stored) == parsed.claim


def test_field_polygon_is_kept_as_compact_geojson() -> None:
    square = {"type": "Polygon", "coordinates": [[[4.0, 49.0], [4.01, 49.0], [4.01, 49.01], [4.0, 49.01], [4.0, 49.0]]]}
    assert json.loads(parse_geojson(square)) == square
    assert json.loads(parse_geojson({"type": "Feature", "geometry": square, "properties": {}})) == square


@pytest.mark.parametrize(
    ("gtin", "ok"), [("09506000134352", True), ("09506000134353", False), ("00012345600012", True)]
)
def test_gtin_check_digit(gtin: str, ok: bool) -> None:
    assert gtin_check_digit_ok(gtin) is ok


def test_lgtin_digital_link_escapes_the_lot_number() -> None:
    assert lgtin_uri("09506000134352", "A/7 b") == "https://id.gs1.org/01/09506000134352/10/A%2F7%20b"


def test_epcis_document_without_site_or_quantity_leaves_them_out() -> None:
    verification = {
        "id": "7f1c0b1e-0000-4000-8000-000000000000",
        "created_at": "2026-01-02T03:04:05.678000+00:00",
        "claim": {"lot_id": "L1", "species": "barley", "variety": "planet", "origin": {"region": "51"}},
        "site": "Silo de Reims",
        "photos": [],
        "model_version": "m1",
        "verdict": {"flagged": False},
        "reviews": [],
    }
    document = epcis_document([verification], default_gtin="09506000134352", created=datetime(2026, 1, 2, tzinfo=UTC))
    (event,) = document["epcisBody"]["eventList"]
    assert "readPoint" not in event and "quantity" not in event["quantityList"][0]
    assert (
        event["eventTime"] == "2026-01-02T03:04:05.678+00:00" and event["eventID"] == f"urn:uuid:{verification['id']}"
    )


def test_error_kinds_are_snake_case_names_of_the_error() -> None:
    assert error_kind(UnknownVarietyError("x")) == "unknown_variety"
    assert error_kind(ClaimError("x")) == "claim"
