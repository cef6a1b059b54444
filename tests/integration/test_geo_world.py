"""Provenance zones and the `grainproof regions` commands on a small simulated world."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grainproof.cli import app
from grainproof.geo import load_region_set
from grainproof.geo.zones import NOISE, ProvenanceZones

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 lots, one small photo each: what the simulator writes, kept small for the test budget."""
    from grainproof.simulate.world import WorldConfig, simulate_world

    out = tmp_path_factory.mktemp("world")
    simulate_world(WorldConfig(lots=400, photos_per_lot=1, seed=11, max_photo_side=64), out, workers=1)
    return out


@pytest.fixture(scope="module")
def reference(world: Path) -> pd.DataFrame:
    lots = pd.read_csv(world / "lots.csv", dtype={"region": str})
    return lots[lots["referenced"].astype(str).str.lower() == "true"].reset_index(drop=True)


def test_zones_of_a_simulated_world_are_stable_under_reruns(reference: pd.DataFrame) -> None:
    first = ProvenanceZones().fit(reference["lon"], reference["lat"])
    again = ProvenanceZones().fit(reference["lon"], reference["lat"])
    np.testing.assert_array_equal(first.labels_, again.labels_)
    np.testing.assert_array_equal(first.strengths_, again.strengths_)
    order = np.random.default_rng(0).permutation(len(reference))
    shuffled = ProvenanceZones().fit(reference["lon"].to_numpy()[order], reference["lat"].to_numpy()[order])
    np.testing.assert_array_equal(shuffled.labels_, first.labels_[order])


def test_every_reference_lot_of_the_world_is_zoned_or_noise(reference: pd.DataFrame) -> None:
    zones = ProvenanceZones().fit(reference["lon"], reference["lat"])
    assert zones.n_zones_ >= 2
    assert set(np.unique(zones.labels_)) <= {NOISE, *range(zones.n_zones_)}
    assert 0.0 <= zones.noise_share_ < 0.6
    assert zones.noise_share_ == pytest.approx(float(np.mean(zones.labels_ == NOISE)))
    # Every lot has a provenance unit: its zone, or its département when noise or in a thin zone.
    departements = load_region_set("fr-departements")
    for unit, label, code in zip(zones.units_, zones.labels_, reference["region"], strict=True):
        if label == NOISE:
            assert unit == f"region:{departements.resolve_code(code)}"
        else:
            assert unit.startswith(("zone:", "region:"))


def test_zones_with_latent_traits_as_embeddings_are_reproducible(world: Path, reference: pd.DataFrame) -> None:
    traits = pd.read_csv(world / "latent_traits.csv").set_index("lot_id").loc[reference["lot_id"]].to_numpy()
    first = ProvenanceZones(embedding_weight=0.5).fit(reference["lon"], reference["lat"], traits)
    again = ProvenanceZones(embedding_weight=0.5).fit(reference["lon"], reference["lat"], traits)
    np.testing.assert_array_equal(first.labels_, again.labels_)
    labels, strengths = first.predict(reference["lon"][:20], reference["lat"][:20], traits[:20])
    assert ((labels == NOISE) == (strengths == 0.0)).all()


def test_regions_zones_command_writes_polygons_and_reports_noise(world: Path, tmp_path: Path) -> None:
    out, picture = tmp_path / "zones.geojson", tmp_path / "zones.png"
    result = CliRunner().invoke(
        app, ["regions", "zones", str(world / "lots.csv"), "--out", str(out), "--map", str(picture)]
    )
    assert result.exit_code == 0, result.output
    assert "noise share:" in result.output
    polygons = gpd.read_file(out)
    assert len(polygons) >= 2 and polygons.geometry.is_valid.all()
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_regions_show_draws_a_png_and_an_svg(tmp_path: Path) -> None:
    values = tmp_path / "values.csv"
    values.write_text("code,value\n51,0.9\n02,0.4\n13,0.01\n")
    declared = ["--lon", "4.031712", "--lat", "49.258312", "--region", "51"]
    for name in ("map.png", "map.svg"):
        out = tmp_path / name
        arguments = ["regions", "show", "--set", "fr-departements", "--out", str(out), "--values", str(values)]
        result = CliRunner().invoke(app, [*arguments, *declared])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 10_000
    assert (tmp_path / "map.svg").read_text().lstrip().startswith("<?xml")


def test_regions_list_and_lookup_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["regions", "list"])
    assert listed.exit_code == 0 and "fr-departements" in listed.output
    found = runner.invoke(app, ["regions", "lookup", "4.031712", "49.258312"])
    assert found.exit_code == 0 and "51" in found.output and "Marne" in found.output
    at_sea = runner.invoke(app, ["regions", "lookup", "--", "-3.1", "47.0"])
    assert at_sea.exit_code == 1 and "nearest: 56" in at_sea.output
