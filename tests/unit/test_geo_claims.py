"""Validation of declared origins under the EU deforestation regulation's geolocation conventions."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from grainproof.domain import Origin
from grainproof.errors import ClaimError
from grainproof.geo import RegionSet, load_region_set
from grainproof.geo.claims import (
    ResolvedOrigin,
    count_decimals,
    parse_geojson_geometry,
    polygon_area_ha,
    validate_origin,
)

REIMS = (4.031712, 49.258312)
# A ~9 ha field near Reims (300 m x 300 m), with six-decimal vertices.
FIELD = [[4.031712, 49.258312], [4.035845, 49.258312], [4.035845, 49.261011], [4.031712, 49.261011]]


def polygon_geojson(ring: list[list[float]], *, close: bool = True) -> str:
    coordinates = [*ring, ring[0]] if close else ring
    return json.dumps({"type": "Polygon", "coordinates": [coordinates]})


@pytest.fixture(scope="module")
def departements() -> RegionSet:
    return load_region_set("fr-departements")


def test_a_six_decimal_point_in_its_declared_departement_is_accepted(departements: RegionSet) -> None:
    resolved = validate_origin(Origin(lon=REIMS[0], lat=REIMS[1], region="51"), departements)
    assert resolved.region_shares == {"51": 1.0}
    assert resolved.point == REIMS
    assert resolved.warnings == ()
    assert resolved.primary_region == "51"


def test_a_point_contradicting_its_declared_region_is_an_error(departements: RegionSet) -> None:
    with pytest.raises(ClaimError, match=r"is in 51 Marne, .* from the declared region 02 Aisne"):
        validate_origin(Origin(lon=REIMS[0], lat=REIMS[1], region="02"), departements)


def test_a_point_in_the_sea_is_reported_as_such(departements: RegionSet) -> None:
    with pytest.raises(ClaimError, match=r"in the sea or outside .*nearest region: 56 Morbihan"):
        validate_origin(Origin(lon=-3.100000, lat=47.000000), departements)


def test_a_point_far_outside_the_set_is_reported_as_outside(departements: RegionSet) -> None:
    with pytest.raises(ClaimError, match="outside the area covered by the region set fr-departements"):
        validate_origin(Origin(lon=-60.123456, lat=10.123456), departements)


def test_swapped_latitude_and_longitude_are_recognised(departements: RegionSet) -> None:
    with pytest.raises(ClaimError, match="latitude and longitude look swapped"):
        validate_origin(Origin(lon=REIMS[1], lat=REIMS[0]), departements)


def test_a_point_just_across_the_border_keeps_the_declared_region_with_a_warning(departements: RegionSet) -> None:
    # Walk from Reims towards the Aisne border and stop 300 m beyond it.
    marne = departements.geometry("51")
    lon, lat = 3.835000, 49.350000
    while departements.region_of(lon, lat) == "51":
        lon -= 0.001
    lon = round(lon - 0.003, 6)  # ~220 m into Aisne
    assert not marne.contains(shapely.Point(lon, lat))
    resolved = validate_origin(Origin(lon=lon, lat=lat, region="51"), departements)
    assert resolved.region_shares == {"51": 1.0}
    assert any("just across the border" in w for w in resolved.warnings)


def test_fewer_than_six_decimals_warns_by_default_and_fails_when_strict(departements: RegionSet) -> None:
    origin = Origin(lon=4.0317, lat=49.2583)
    resolved = validate_origin(origin, departements)
    assert resolved.region_shares == {"51": 1.0}
    assert any("at least 6 decimals" in w for w in resolved.warnings)
    with pytest.raises(ClaimError, match="at least 6 decimals"):
        validate_origin(origin, departements, strict=True)


@pytest.mark.parametrize(
    ("value", "decimals"), [(4.5, 1), (4.123456, 6), (49.0, 0), ("4.500000", 1), (1e-7, 7), ("x", 0)]
)
def test_decimals_are_counted_from_the_value_as_written(value: float | str, decimals: int) -> None:
    assert count_decimals(value) == decimals


def test_a_plot_over_four_hectares_given_as_a_point_is_refused(departements: RegionSet) -> None:
    with pytest.raises(ClaimError, match="over 4 ha must be described by a polygon"):
        validate_origin(Origin(lon=REIMS[0], lat=REIMS[1]), departements, declared_area_ha=12.0)
    small = validate_origin(Origin(lon=REIMS[0], lat=REIMS[1]), departements, declared_area_ha=3.5)
    assert small.region_shares == {"51": 1.0}


def test_a_field_polygon_resolves_to_its_departement_and_area(departements: RegionSet) -> None:
    resolved = validate_origin(Origin(geometry_geojson=polygon_geojson(FIELD), region="51"), departements)
    assert resolved.region_shares == {"51": 1.0}
    assert resolved.area_ha == pytest.approx(9.0, rel=0.02)
    assert resolved.point is not None and departements.region_of(*resolved.point) == "51"
    assert resolved.warnings == ()


def test_a_polygon_straddling_two_departements_reports_both_shares(departements: RegionSet) -> None:
    ring = [[3.550001, 49.250001], [3.750001, 49.250001], [3.750001, 49.400001], [3.550001, 49.400001]]
    resolved = validate_origin(Origin(geometry_geojson=polygon_geojson(ring)), departements)
    assert set(resolved.region_shares) == {"02", "51"}
    assert sum(resolved.region_shares.values()) == pytest.approx(1.0, abs=1e-9)


def test_an_unclosed_ring_is_refused(departements: RegionSet) -> None:
    with pytest.raises(ClaimError, match="not closed"):
        validate_origin(Origin(geometry_geojson=polygon_geojson(FIELD, close=False)), departements)


def test_a_self_intersecting_polygon_is_refused(departements: RegionSet) -> None:
    bow_tie = [FIELD[0], FIELD[2], FIELD[1], FIELD[3]]
    with pytest.raises(ClaimError, match="self-intersection"):
        validate_origin(Origin(geometry_geojson=polygon_geojson(bow_tie)), departements)


def test_a_point_outside_its_declared_field_is_refused(departements: RegionSet) -> None:
    origin = Origin(lon=4.131712, lat=49.258312, geometry_geojson=polygon_geojson(FIELD))
    with pytest.raises(ClaimError, match="outside the declared field polygon"):
        validate_origin(origin, departements)


def test_a_polygon_in_another_departement_than_declared_is_refused(departements: RegionSet) -> None:
    with pytest.raises(ClaimError, match="not in the declared region 13"):
        validate_origin(Origin(geometry_geojson=polygon_geojson(FIELD), region="13"), departements)


def test_a_declared_area_far_from_the_polygon_area_is_a_warning(departements: RegionSet) -> None:
    resolved = validate_origin(Origin(geometry_geojson=polygon_geojson(FIELD)), departements, declared_area_ha=40.0)
    assert any("differs from the polygon's area" in w for w in resolved.warnings)


def test_a_feature_collection_of_fields_is_one_origin(departements: RegionSet) -> None:
    second = [[x + 0.01, y] for x, y in FIELD]
    features = [
        {"type": "Feature", "properties": {}, "geometry": json.loads(polygon_geojson(ring))} for ring in (FIELD, second)
    ]
    text = json.dumps({"type": "FeatureCollection", "features": features})
    resolved = validate_origin(Origin(geometry_geojson=text), departements)
    assert resolved.area_ha == pytest.approx(18.0, rel=0.03)


def test_a_region_code_alone_resolves_to_that_region(departements: RegionSet) -> None:
    resolved = validate_origin(Origin(region="1"), departements)
    assert resolved.region_shares == {"01": 1.0}
    assert resolved.point is not None and departements.region_of(*resolved.point) == "01"


def test_without_a_region_set_only_the_format_is_checked() -> None:
    resolved = validate_origin(Origin(lon=-60.123456, lat=10.123456, region="X1"), None)
    assert resolved.region_shares == {"X1": 1.0}
    assert resolved.region_set is None


def test_geodesic_area_of_a_one_hectare_square() -> None:
    # 100 m x 100 m at the equator: 1 ha within a fraction of a percent.
    side = 100 / 111_320
    square = parse_geojson_geometry(polygon_geojson([[0.0, 0.0], [side, 0.0], [side, side], [0.0, side]]))
    assert polygon_area_ha(square) == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        "null",
        '{"type": "LineString", "coordinates": [[0, 0], [1, 1]]}',
        '{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}',
        '{"type": "Polygon", "coordinates": [[[200, 0], [1, 1], [1, 0], [200, 0]]]}',
        '{"type": "Polygon", "coordinates": [[[0, 0], [true, 1], [1, 0], [0, 0]]]}',
        '{"type": "Polygon", "coordinates": [[[0, 0], [1e400, 1], [1, 0], [0, 0]]]}',
        '{"type": "Polygon", "coordinates": [[[0, 0], [NaN, 1], [1, 0], [0, 0]]]}',
        '{"type": "Point", "coordinates": [1]}',
        '{"type": "Feature", "geometry": null}',
        '{"type": "FeatureCollection", "features": [1]}',
        '{"type": "FeatureCollection", "features": []}',
        "[" * 100_000,
    ],
)
def test_malformed_geojson_is_a_claim_error(text: str) -> None:
    with pytest.raises(ClaimError):
        parse_geojson_geometry(text)


_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
_NUMBERS = st.floats(-200, 200) | st.integers(-(10**30), 10**30) | st.sampled_from([4.031712, 49.258312])


def _geojson_like() -> st.SearchStrategy[Any]:
    """JSON values shaped like GeoJSON often enough to reach the deep checks."""
    position = st.lists(_NUMBERS | _JSON_LEAVES, min_size=0, max_size=4)
    ring = st.lists(position, min_size=0, max_size=6).map(lambda r: [*r, r[0]] if r else r) | st.lists(position)
    coordinates = st.one_of(position, ring, st.lists(ring, max_size=3), st.lists(st.lists(ring, max_size=2)))
    geometry = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Point", "Polygon", "MultiPolygon", "LineString", "Bogus"]) | _JSON_LEAVES,
            "coordinates": coordinates | _JSON_LEAVES,
        }
    )
    feature = st.fixed_dictionaries({"type": st.just("Feature"), "geometry": geometry | _JSON_LEAVES})
    collection = st.fixed_dictionaries(
        {"type": st.just("FeatureCollection"), "features": st.lists(feature | geometry | _JSON_LEAVES, max_size=3)}
    )
    anything = st.recursive(
        _JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    return geometry | feature | collection | anything


@given(value=_geojson_like())
def test_invalid_geojson_of_any_shape_raises_only_claim_error(value: Any) -> None:
    departements = load_region_set("fr-departements")
    text = json.dumps(value)
    try:
        resolved = validate_origin(Origin(geometry_geojson=text), departements)
    except ClaimError:
        return
    assert isinstance(resolved, ResolvedOrigin)
    assert sum(resolved.region_shares.values()) == pytest.approx(1.0, abs=1e-6)


@given(text=st.text(max_size=200))
def test_arbitrary_text_as_geojson_raises_only_claim_error(text: str) -> None:
    with contextlib.suppress(ClaimError):
        parse_geojson_geometry(text)


def test_a_six_decimal_point_whose_longitude_ends_in_zero_is_not_warned(departements: RegionSet) -> None:
    # 4.031710 reads back as 4.03171: the latitude still shows the GPS exported six decimals.
    resolved = validate_origin(Origin(lon=4.031710, lat=49.258312), departements, strict=True)
    assert resolved.warnings == ()
