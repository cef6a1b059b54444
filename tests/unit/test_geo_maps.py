"""Region maps: PNG and SVG, values shaded, declared origin marked, same input same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grainproof.domain import Origin
from grainproof.errors import GrainproofError
from grainproof.geo import load_region_set
from grainproof.geo.maps import draw_region_map

FIELD = {
    "type": "Polygon",
    "coordinates": [[[4.031712, 49.258312], [4.045845, 49.258312], [4.045845, 49.271011], [4.031712, 49.258312]]],
}


def test_a_map_with_values_and_a_declared_field_is_written_as_png(tmp_path: Path) -> None:
    regions = load_region_set("fr-regions")
    declared = Origin(region="44", geometry_geojson=json.dumps(FIELD))
    out = draw_region_map(regions, {"44": 0.8, "32": 0.3}, declared=declared, out=tmp_path / "lot.png", title="Lot L-1")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_map_is_the_same_bytes(tmp_path: Path) -> None:
    regions = load_region_set("fr-regions")
    first = draw_region_map(regions, {"11": 2.0, "24": 5.0}, out=tmp_path / "a.svg", title="t", value_label="lots")
    second = draw_region_map(regions, {"11": 2.0, "24": 5.0}, out=tmp_path / "b.svg", title="t", value_label="lots")
    assert first.read_bytes() == second.read_bytes()


def test_an_unknown_format_or_region_is_a_clear_error(tmp_path: Path) -> None:
    regions = load_region_set("fr-regions")
    with pytest.raises(GrainproofError, match=r"\.png or \.svg"):
        draw_region_map(regions, {}, out=tmp_path / "map.jpg", title="t")
    with pytest.raises(GrainproofError, match="not in region set"):
        draw_region_map(regions, {"99": 1.0}, out=tmp_path / "map.png", title="t")
