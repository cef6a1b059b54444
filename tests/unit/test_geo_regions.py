"""The built-in region sets and their lookups: points, polygons, neighbours, distances, sampling."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from grainproof.errors import ClaimError, GrainproofError, NotFoundError
from grainproof.geo import RegionSet, import_region_set, list_region_sets, load_region_set
from grainproof.settings import Settings

REIMS = (4.031700, 49.258300)
METROPOLITAN_DEPARTEMENTS = {f"{i:02d}" for i in range(1, 96) if i != 20} | {"2A", "2B"}
METROPOLITAN_REGIONS = {"11", "24", "27", "28", "32", "44", "52", "53", "75", "76", "84", "93", "94"}


@pytest.fixture(scope="module")
def departements() -> RegionSet:
    return load_region_set("fr-departements")


@pytest.fixture(scope="module")
def regions() -> RegionSet:
    return load_region_set("fr-regions")


def test_all_96_metropolitan_departements_are_present_with_valid_geometry(departements: RegionSet) -> None:
    assert set(departements.codes) == METROPOLITAN_DEPARTEMENTS
    assert departements.frame.geometry.is_valid.all()
    assert departements.frame.crs.to_epsg() == 4326
    assert departements.name_of("2A") == "Corse-du-Sud"


def test_all_13_metropolitan_regions_are_present_with_valid_geometry(regions: RegionSet) -> None:
    assert set(regions.codes) == METROPOLITAN_REGIONS
    assert regions.frame.geometry.is_valid.all()
    assert regions.name_of("44") == "Grand Est"


def test_departements_do_not_overlap_and_tile_each_region(departements: RegionSet, regions: RegionSet) -> None:
    assert shapely.coverage_is_valid(departements.frame.geometry.to_numpy())
    for code in regions.codes:
        members = departements.frame[departements.frame["region_code"] == code]
        member_area = sum(departements.area_km2(g) for g in members.geometry)
        assert member_area == pytest.approx(regions.area_km2(regions.geometry(code)), rel=1e-6)


def test_metropolitan_area_matches_the_official_figure(departements: RegionSet) -> None:
    # INSEE: 543 940 km² for metropolitan France; the simplified borders must stay within 2 %.
    total = sum(departements.area_km2(g) for g in departements.frame.geometry)
    assert total == pytest.approx(543_940, rel=0.02)


def test_a_point_in_reims_maps_to_marne_and_grand_est(departements: RegionSet, regions: RegionSet) -> None:
    assert departements.region_of(*REIMS) == "51"
    assert regions.region_of(*REIMS) == "44"


def test_lookup_of_many_points_keeps_their_shape_and_marks_the_sea_as_none(departements: RegionSet) -> None:
    lon = np.array([[4.0317, 2.3522], [-3.0, 5.3698]])  # Reims, Paris; Atlantic, Marseille
    lat = np.array([[49.2583, 48.8566], [47.0, 43.2965]])
    codes = departements.lookup_points(lon, lat)
    assert codes.shape == (2, 2)
    assert codes.tolist() == [["51", "75"], [None, "13"]]


def test_lookup_of_non_finite_points_answers_none(departements: RegionSet) -> None:
    codes = departements.lookup_points(np.array([np.nan, 4.0317]), np.array([49.0, np.inf]))
    assert codes.tolist() == [None, None]


@given(lon=st.floats(-5.2, 9.6), lat=st.floats(41.3, 51.1))
def test_any_point_inside_a_region_polygon_maps_to_that_region(lon: float, lat: float) -> None:
    departements = load_region_set("fr-departements")
    inside = shapely.contains_xy(departements.frame.geometry.to_numpy(), lon, lat)
    expected = departements.codes[int(np.argmax(inside))] if inside.any() else None
    if inside.any():
        assert inside.sum() == 1, "régions must not overlap"
    assert departements.region_of(lon, lat) == expected


@given(region_index=st.integers(0, 95), seed=st.integers(0, 2**32 - 1))
def test_sampled_points_fall_inside_their_region(region_index: int, seed: int) -> None:
    departements = load_region_set("fr-departements")
    code = departements.codes[region_index]
    points = departements.sample_points(code, 20, np.random.default_rng(seed))
    assert points.shape == (20, 2)
    assert (departements.lookup_points(points[:, 0], points[:, 1]) == code).all()


def test_sampling_is_reproducible_with_the_same_seed(departements: RegionSet) -> None:
    first = departements.sample_points("51", 50, np.random.default_rng(7))
    again = departements.sample_points("51", 50, np.random.default_rng(7))
    other = departements.sample_points("51", 50, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_polygon_straddling_two_departements_reports_both_shares(departements: RegionSet) -> None:
    # A square across the Aisne (02) / Marne (51) border near Fismes.
    square = shapely.box(3.55, 49.25, 3.75, 49.40)
    shares = departements.polygon_shares(square)
    assert set(shares) == {"02", "51"}
    assert all(0.05 < share < 0.95 for share in shares.values())
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)


def test_polygon_shares_use_area_not_degrees(departements: RegionSet) -> None:
    # A 1°x1° box at 49°N covers about 111.3 km x 73 km; in degrees it would be "1".
    box_area = departements.area_km2(shapely.box(3.0, 48.5, 4.0, 49.5))
    assert box_area == pytest.approx(111.3 * 111.3 * np.cos(np.radians(49.0)), rel=0.01)


@st.composite
def polygons_on_land(draw: st.DrawFn) -> shapely.Polygon:
    """A random box around a random point of France, clipped to land: valid and inside the set."""
    departements = load_region_set("fr-departements")
    code = departements.codes[draw(st.integers(0, len(departements) - 1))]
    seed = draw(st.integers(0, 2**32 - 1))
    lon, lat = departements.sample_points(code, 1, np.random.default_rng(seed))[0]
    half_width = draw(st.floats(0.005, 0.6))
    half_height = draw(st.floats(0.005, 0.6))
    box = shapely.box(lon - half_width, lat - half_height, lon + half_width, lat + half_height)
    return shapely.intersection(box, departements.land)


@given(polygon=polygons_on_land())
def test_shares_of_any_polygon_inside_the_set_sum_to_one(polygon: shapely.Polygon) -> None:
    departements = load_region_set("fr-departements")
    shares = departements.polygon_shares(polygon)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    # Not only normalised: the pieces in each region add up to the whole polygon (no gaps, no overlaps).
    pieces = sum(departements.area_km2(shapely.intersection(polygon, departements.geometry(c))) for c in shares)
    assert pieces == pytest.approx(departements.area_km2(polygon), rel=1e-6)
    assert departements.outside_share(polygon) < 1e-6


def test_marne_neighbours_include_aisne_ardennes_and_meuse(departements: RegionSet) -> None:
    neighbours = departements.neighbours("51")
    assert {"02", "08", "55"} <= set(neighbours)
    assert set(neighbours) == {"02", "08", "10", "52", "55", "77"}


def test_neighbourhood_is_symmetric_and_corsica_is_an_island(departements: RegionSet) -> None:
    for code in departements.codes:
        for other in departements.neighbours(code):
            assert code in departements.neighbours(other)
    assert departements.neighbours("2A") == ["2B"]


def test_region_neighbours_follow_the_map(regions: RegionSet) -> None:
    assert set(regions.neighbours("44")) == {"11", "27", "32"}


def test_distance_between_regions_is_in_km(departements: RegionSet) -> None:
    assert departements.distance_km("51", "51") == 0.0
    # Marne to Bouches-du-Rhône: about 600 km as the crow flies.
    assert 550 < departements.distance_km("51", "13") < 650
    assert departements.distance_km("51", "02") < departements.distance_km("51", "13")
    matrix = departements.distance_matrix_km()
    i, j = departements.codes.index("51"), departements.codes.index("13")
    assert matrix[i, j] == pytest.approx(departements.distance_km("51", "13"))


def test_representative_point_lies_inside_its_region(departements: RegionSet) -> None:
    for code in departements.codes:
        lon, lat = departements.representative_point(code)
        assert departements.region_of(lon, lat) == code


def test_codes_are_resolved_leniently_and_unknown_codes_are_explained(departements: RegionSet) -> None:
    assert departements.resolve_code("1") == "01"
    assert departements.resolve_code(" 2a ") == "2A"
    with pytest.raises(ClaimError, match="not in region set 'fr-departements'"):
        departements.resolve_code("99")


def test_unknown_region_set_names_the_known_ones(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(NotFoundError, match="fr-departements"):
        load_region_set("atlantis", settings=settings)


def _write_coop_zones(path: Path) -> Path:
    features = [
        {
            "type": "Feature",
            "properties": {"zone": 1, "label": "north"},
            "geometry": json.loads(shapely.to_geojson(shapely.box(3.0, 49.0, 4.0, 50.0))),
        },
        {
            "type": "Feature",
            "properties": {"zone": 2, "label": "south"},
            "geometry": json.loads(shapely.to_geojson(shapely.box(3.0, 48.0, 4.0, 49.0))),
        },
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_a_user_region_set_can_be_imported_and_used(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    source = _write_coop_zones(tmp_path / "zones.geojson")
    imported = import_region_set(source, name="my-coop", code_column="zone", name_column="label", settings=settings)
    assert imported.codes == ["1", "2"]
    loaded = load_region_set("my-coop", settings=settings)
    assert loaded.region_of(3.5, 49.5) == "1"
    assert loaded.name_of("2") == "south"
    assert loaded.neighbours("1") == ["2"]
    assert "my-coop" in list_region_sets(settings)


def test_importing_without_the_code_column_lists_the_columns(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    source = _write_coop_zones(tmp_path / "zones.geojson")
    with pytest.raises(GrainproofError, match=r"no column 'code'.*zone, label"):
        import_region_set(source, name="my-coop", code_column="code", settings=settings)


def test_importing_a_projected_file_reprojects_it_to_wgs84(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    frame = gpd.GeoDataFrame({"id": ["a"]}, geometry=[shapely.box(3.0, 49.0, 4.0, 50.0)], crs="EPSG:4326")
    source = tmp_path / "zones.gpkg"
    frame.to_crs("EPSG:2154").to_file(source)
    imported = import_region_set(source, name="lambert", code_column="id", settings=settings)
    assert imported.region_of(3.5, 49.5) == "a"


def test_importing_over_an_existing_set_needs_overwrite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    source = _write_coop_zones(tmp_path / "zones.geojson")
    import_region_set(source, name="my-coop", code_column="zone", settings=settings)
    with pytest.raises(GrainproofError, match="--overwrite"):
        import_region_set(source, name="my-coop", code_column="zone", settings=settings)
    import_region_set(source, name="my-coop", code_column="zone", settings=settings, overwrite=True)


@pytest.mark.parametrize("name", ["fr-departements", "Bad Name", "../escape"])
def test_importing_under_a_reserved_or_unsafe_name_is_refused(tmp_path: Path, name: str) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    source = _write_coop_zones(tmp_path / "zones.geojson")
    with pytest.raises(GrainproofError):
        import_region_set(source, name=name, code_column="zone", settings=settings)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/tmp/x", "fr-departements/../x", ""])
def test_a_region_set_name_can_never_reach_outside_the_data_dir(tmp_path: Path, name: str) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(NotFoundError, match="Unknown region set"):
        load_region_set(name, settings=settings)
