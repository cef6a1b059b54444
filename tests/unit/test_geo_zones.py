"""Provenance zones: HDBSCAN over reference lots, on points sampled in départements."""

from __future__ import annotations

import numpy as np
import pytest

from grainproof.errors import GrainproofError
from grainproof.geo import load_region_set
from grainproof.geo.zones import NOISE, ProvenanceZones

DENSE = ("51", "29", "13")  # Marne, Finistère, Bouches-du-Rhône: far apart, each a clear zone


def _lots(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """60 lots in each of three distant départements plus one isolated lot in each of 15 others."""
    departements = load_region_set("fr-departements")
    rng = np.random.default_rng(seed)
    scattered = ("23", "48", "2A", "67", "64", "74", "36", "50", "05", "15", "40", "70", "87", "12", "03")
    points = np.concatenate(
        [departements.sample_points(code, 60, rng) for code in DENSE]
        + [departements.sample_points(code, 1, rng) for code in scattered]
    )
    return points[:, 0], points[:, 1]


@pytest.fixture(scope="module")
def fitted() -> ProvenanceZones:
    lon, lat = _lots()
    return ProvenanceZones(min_cluster_size=20).fit(lon, lat)


def test_three_dense_departements_become_three_zones(fitted: ProvenanceZones) -> None:
    assert fitted.n_zones_ == 3
    summary = fitted.zone_summary()
    assert sorted(summary["main_region"]) == sorted(DENSE)
    assert (summary["lots"] >= 50).all()


def test_every_lot_is_zoned_or_counted_as_noise(fitted: ProvenanceZones) -> None:
    labels = fitted.labels_
    assert set(np.unique(labels)) <= {NOISE, *range(fitted.n_zones_)}
    assert fitted.noise_share_ == pytest.approx(float((labels == NOISE).mean()))
    assert int(fitted.zone_sizes_.sum()) + int((labels == NOISE).sum()) == len(labels)
    # The isolated lots are noise; strengths are 0 for noise and in (0, 1] for members.
    assert (labels[-15:] == NOISE).all()
    assert (fitted.strengths_[labels == NOISE] == 0).all()
    assert ((fitted.strengths_[labels != NOISE] > 0) & (fitted.strengths_[labels != NOISE] <= 1)).all()


def test_zones_do_not_depend_on_the_order_of_the_lots(fitted: ProvenanceZones) -> None:
    lon, lat = _lots()
    order = np.random.default_rng(1).permutation(len(lon))
    shuffled = ProvenanceZones(min_cluster_size=20).fit(lon[order], lat[order])
    np.testing.assert_array_equal(shuffled.labels_, fitted.labels_[order])


def test_a_new_point_joins_the_zone_around_it(fitted: ProvenanceZones) -> None:
    departements = load_region_set("fr-departements")
    summary = fitted.zone_summary().set_index("main_region")
    reims_zone = int(summary.loc["51", "zone"])
    labels, strengths = fitted.predict([4.031712, 1.4437], [49.258312, 47.5833])  # Reims; a village in 41
    assert labels[0] == reims_zone and strengths[0] > 0.5
    assert labels[1] == NOISE and strengths[1] == 0.0
    units = fitted.assign_units([4.031712, 1.4437], [49.258312, 47.5833])
    assert units.tolist() == [f"zone:{reims_zone}", f"region:{departements.region_of(1.4437, 47.5833)}"]


def test_thin_zones_fall_back_to_the_administrative_region() -> None:
    lon, lat = _lots()
    strict = ProvenanceZones(min_cluster_size=20, min_zone_lots=1000).fit(lon, lat)
    assert all(unit.startswith("region:") for unit in strict.units_)
    departements = load_region_set("fr-departements")
    expected = [f"region:{code}" for code in departements.lookup_points(lon, lat)]
    assert strict.units_.tolist() == expected


def test_zone_polygons_cover_their_lots_and_stay_on_land(fitted: ProvenanceZones) -> None:
    import shapely

    polygons = fitted.zone_polygons()
    land = load_region_set("fr-departements").land
    assert list(polygons["zone"]) == list(range(fitted.n_zones_))
    assert polygons.crs.to_epsg() == 4326
    for zone, geometry in zip(polygons["zone"], polygons.geometry, strict=True):
        members = fitted.labels_ == zone
        assert shapely.contains_xy(geometry.buffer(1e-9), fitted.lon_[members], fitted.lat_[members]).all()
        assert shapely.difference(geometry, land).area < 1e-9


def test_embeddings_can_split_a_zone_where_lots_look_different() -> None:
    lon, lat = _lots()
    # Inside Marne, half the lots look very different from the other half.
    looks = np.zeros((len(lon), 4))
    marne = slice(0, 60)
    looks[marne, 0] = np.where(np.arange(60) % 2 == 0, 10.0, -10.0)
    looks += np.random.default_rng(0).normal(scale=0.1, size=looks.shape)
    geography = ProvenanceZones(min_cluster_size=20).fit(lon, lat)
    combined = ProvenanceZones(min_cluster_size=20, embedding_weight=3.0).fit(lon, lat, looks)
    assert combined.n_zones_ > geography.n_zones_
    with pytest.raises(GrainproofError, match="fitted with embeddings"):
        combined.predict(lon[:2], lat[:2])
    labels, _ = combined.predict(lon[:2], lat[:2], looks[:2])
    assert labels.tolist() == combined.labels_[:2].tolist()


def test_missing_coordinates_are_a_clear_error() -> None:
    with pytest.raises(GrainproofError, match="missing or out-of-range coordinates"):
        ProvenanceZones().fit([4.0, np.nan, 5.0], [49.0, 48.0, 47.0])
    with pytest.raises(GrainproofError, match="at least 2 reference lots"):
        ProvenanceZones().fit([4.0], [49.0])
