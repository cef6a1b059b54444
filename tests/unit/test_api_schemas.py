"""Pure parts of the API: claim parsing never fails with anything but a ClaimError, reports every problem
with its member, a parsed claim survives storage unchanged, the EPCIS identifiers follow GS1's rules, and
the API's contract types keep up with the domain's."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.api import contract
from grainproof.api.epcis import epcis_document
from grainproof.api.errors import error_kind, from_grainproof_error
from grainproof.api.gs1 import (
    Gs1ConfigurationError,
    configured_gtin,
    gtin14,
    gtin_check_digit_ok,
    lot_problem,
    product_uri,
)
from grainproof.api.schemas import ClaimProblemsError, FieldProblem, claim_from_payload, parse_claim, parse_geojson
from grainproof.api.services.verifications import TraceEvent
from grainproof.domain import Verdict
from grainproof.errors import ClaimError, UnknownVarietyError
from grainproof.settings import Settings

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
    ("gtin", "ok"),
    [("09506000134352", True), ("09506000134353", False), ("00012345600012", True), ("4006381333931", True)],
)
def test_gtin_check_digit(gtin: str, ok: bool) -> None:
    assert gtin_check_digit_ok(gtin) is ok


def test_shorter_gtins_become_gtin_14_and_bad_ones_are_refused() -> None:
    assert gtin14("4006381333931") == "04006381333931"
    assert gtin14("4006381333932") is None and gtin14("12345") is None and gtin14("0950600013435x") is None


@pytest.mark.parametrize(
    ("lot", "ok"),
    [
        ("L-2025/0042", True),
        ("A" * 20, True),
        ("A" * 21, False),  # GS1 allows 20 characters in AI 10
        ("lot-demo-world-000123", False),  # 21 characters
        ("LOT 7/B", False),  # no spaces in character set 82
        ("blé-7", False),  # nor accents
    ],
)
def test_gs1_lot_numbers_are_at_most_20_characters_of_character_set_82(lot: str, ok: bool) -> None:
    assert (lot_problem(lot) is None) is ok


def test_digital_link_escapes_the_lot_number_and_drops_a_lot_gs1_does_not_allow() -> None:
    assert product_uri("09506000134352", "A/7%b") == "https://id.gs1.org/01/09506000134352/10/A%2F7%25b"
    assert product_uri("09506000134352", "LOT 7/B") == "https://id.gs1.org/01/09506000134352"


def test_epcis_export_needs_a_configured_gtin_and_names_the_setting() -> None:
    with pytest.raises(Gs1ConfigurationError, match="GRAINPROOF_GS1_GTIN"):
        configured_gtin(Settings(gs1_gtin=None))
    with pytest.raises(Gs1ConfigurationError, match="check digit"):
        configured_gtin(Settings(gs1_gtin="09506000134353"))
    assert configured_gtin(Settings(gs1_gtin="4006381333931")) == "04006381333931"


def _verification(**changes: Any) -> dict[str, Any]:
    verdict = {
        "flagged": False,
        "plausibility": 0.4,
        "origin_plausibility": 0.5,
        "season_plausibility": None,
        "alpha": 0.01,
        "reasons": ["Declared 51 is plausible."],
        "declared_origin_unit": "51",
        "low_confidence": False,
    }
    return {
        "id": "7f1c0b1e-0000-4000-8000-000000000000",
        "created_at": "2026-01-02T03:04:05.678000+00:00",
        "claim": {"lot_id": "L1", "species": "barley", "variety": "planet", "origin": {"region": "51"}},
        "site": "Silo de Reims",
        "photos": [],
        "model_version": "m1",
        "verdict": verdict,
        "reviews": [],
        **changes,
    }


def test_epcis_document_without_site_or_quantity_leaves_them_out() -> None:
    verification = _verification()
    document = epcis_document(
        [TraceEvent(verification=verification)],
        settings=Settings(gs1_gtin="09506000134352"),
        created=datetime(2026, 1, 2, tzinfo=UTC),
    )
    (event,) = msgspec.to_builtins(document)["epcisBody"]["eventList"]
    assert "readPoint" not in event and "quantity" not in event["quantityList"][0]
    assert event["eventTime"].startswith("2026-01-02T03:04:05.678") and event["eventTimeZoneOffset"] == "+00:00"
    assert event["eventID"] == f"urn:uuid:{verification['id']}" and event["disposition"] == "conformant"
    assert event["grainproof:inspection"]["grainproof:site"] == "Silo de Reims"


def test_claim_problems_carry_json_pointers_to_their_members() -> None:
    with pytest.raises(ClaimProblemsError) as caught:
        parse_claim({"lot_id": "L1", "species": "soft_wheat", "variety": "x", "origin": {"lat": "north"}})
    assert [(p.field, p.pointer) for p in caught.value.problems] == [("claim.origin.lat", "#/claim/origin/lat")]
    assert FieldProblem("unit_vectors[3]", "x").pointer == "#/unit_vectors/3"
    problem = msgspec.to_builtins(from_grainproof_error(caught.value).extra)
    assert problem["errors"] == [
        {"detail": "claim.origin.lat must be a finite number", "pointer": "#/claim/origin/lat"}
    ]


def test_a_claim_with_a_gtin_needs_a_lot_id_gs1_allows() -> None:
    data = {"lot_id": "LOT 7/B", "species": "soft_wheat", "variety": "x", "origin": {"region": "51"}}
    parse_claim(data)  # without a GTIN any lot id will do
    with pytest.raises(ClaimProblemsError, match="GS1 batch/lot number"):
        parse_claim({**data, "gtin": "09506000134352"})


def test_the_api_verdict_has_every_field_of_the_domain_verdict() -> None:
    # Adding a field to grainproof.domain.Verdict means adding one line to grainproof.api.contract.Verdict.
    from dataclasses import fields

    api_fields = [f for f in contract.Verdict.__struct_fields__ if f not in contract.LEGACY_VERDICT_FIELDS]
    assert [f.name for f in fields(Verdict)] == api_fields


def test_a_key_a_service_adds_to_a_view_without_the_contract_is_refused_not_dropped() -> None:
    from grainproof.store.audit import review_payload
    from grainproof.store.tables import Review

    row = Review(
        id="r1", verification_id="v1", decision="false_alarm", note="", created_at=datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert contract.shaped(review_payload(row), contract.Review).decision == contract.ReviewDecision.FALSE_ALARM
    with pytest.raises(msgspec.ValidationError, match="second_reviewer"):
        contract.shaped({**review_payload(row), "second_reviewer": 7}, contract.Review)


def test_error_kinds_are_snake_case_names_of_the_error() -> None:
    assert error_kind(UnknownVarietyError("x")) == "unknown_variety"
    assert error_kind(ClaimError("x")) == "claim"
    assert error_kind(ClaimProblemsError("The claim", [FieldProblem("claim.lot_id", "claim.lot_id is missing")])) == (
        "claim"
    )
