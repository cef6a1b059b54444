"""Region sets: named collections of polygons (départements, régions, a cooperative's own zones).

A region set answers the geographic questions of verification: which region a point is in (for many
points at once, through a spatial index), how a field polygon splits across regions (areas in an
equal-area projection, never in degrees), which regions touch, how far apart two regions are and
where to put a region's marker on a map.

Built-in sets live in `Settings.geo_dir` (the repository's geo/); sets a user registers with
`grainproof regions import` live in `Settings.region_sets_dir`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry
from shapely.ops import nearest_points

from grainproof.domain import check_point
from grainproof.errors import ClaimError, GrainproofError, NotFoundError
from grainproof.settings import Settings, get_settings

#: Built-in sets shipped in geo/ (see geo/README.md).
BUILTIN_REGION_SETS: tuple[str, ...] = ("fr-departements", "fr-regions")

#: Mean Earth radius (IUGG), for great-circle distances.
EARTH_RADIUS_KM = 6371.0088

#: Equal-area projections for areas and shares: ETRS89-LAEA for Europe, EASE-Grid 2.0 elsewhere.
EUROPE_EQUAL_AREA_CRS = "EPSG:3035"
GLOBAL_EQUAL_AREA_CRS = "EPSG:6933"

#: Longest edge (degrees, ~1 km) kept when projecting for areas.
AREA_SEGMENT_DEG = 0.01

#: Regions closer than this (degrees, ~10 m) count as neighbours: absorbs hairline gaps in user files.
NEIGHBOUR_TOLERANCE_DEG = 1e-4

_SET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def haversine_km(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> Any:
    """Great-circle distance in km between points given in degrees (numpy-broadcasting)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def equal_area_crs_for(bounds: tuple[float, float, float, float]) -> str:
    """The equal-area CRS used for a set with these lon/lat bounds (LAEA Europe where it applies)."""
    min_lon, min_lat, max_lon, max_lat = bounds
    inside_europe = min_lon >= -35.0 and max_lon <= 45.0 and min_lat >= 25.0 and max_lat <= 75.0
    return EUROPE_EQUAL_AREA_CRS if inside_europe else GLOBAL_EQUAL_AREA_CRS


@dataclass(frozen=True, eq=False)
class RegionSet:
    """A named set of non-overlapping regions in EPSG:4326, with spatial lookups.

    `frame` has columns `code`, `name` and `geometry` (plus any extra columns of the source, e.g.
    `region_code` for départements). Build with `load_region_set` or `RegionSet.from_frame`.
    """

    name: str
    frame: gpd.GeoDataFrame = field(repr=False)

    def __post_init__(self) -> None:
        missing = [c for c in ("code", "name", "geometry") if c not in self.frame.columns]
        if missing:
            raise GrainproofError(f"Region set {self.name!r} lacks the column(s) {', '.join(missing)}.")
        if len(self.frame) == 0:
            raise GrainproofError(f"Region set {self.name!r} has no regions.")
        codes = self.frame["code"].astype(str)
        if codes.duplicated().any():
            duplicated = sorted(set(codes[codes.duplicated()]))[:10]
            raise GrainproofError(f"Region set {self.name!r} repeats the code(s) {', '.join(duplicated)}.")
        if self.frame.crs is None or self.frame.crs.to_epsg() != 4326:
            raise GrainproofError(f"Region set {self.name!r} must be in EPSG:4326 (lon/lat WGS84).")

    @classmethod
    def from_frame(cls, name: str, frame: gpd.GeoDataFrame) -> RegionSet:
        """A region set from any GeoDataFrame with `code`, `name` and polygon geometry (reprojected to WGS84)."""
        frame = frame.copy()
        if frame.crs is None:
            frame = frame.set_crs("EPSG:4326")
        elif frame.crs.to_epsg() != 4326:
            frame = frame.to_crs("EPSG:4326")
        frame["code"] = frame["code"].astype(str)
        frame["name"] = frame["name"].astype(str)
        return cls(name=name, frame=frame.reset_index(drop=True))

    # --- basic facts -------------------------------------------------------------------------------

    @cached_property
    def codes(self) -> list[str]:
        """Region codes in file order."""
        return [str(c) for c in self.frame["code"]]

    @cached_property
    def _index_of(self) -> dict[str, int]:
        return {code: i for i, code in enumerate(self.codes)}

    @cached_property
    def _geometries(self) -> np.ndarray:
        geometries = np.asarray(self.frame.geometry.to_numpy())
        shapely.prepare(geometries)  # repeated point tests against the same polygons
        return geometries

    @cached_property
    def _tree(self) -> shapely.STRtree:
        return shapely.STRtree(self._geometries)

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat) of the whole set."""
        min_lon, min_lat, max_lon, max_lat = (float(v) for v in self.frame.total_bounds)
        return (min_lon, min_lat, max_lon, max_lat)

    @cached_property
    def area_crs(self) -> str:
        """The equal-area CRS in which this set computes areas and shares."""
        return equal_area_crs_for(self.bounds)

    @cached_property
    def _to_area_crs(self) -> Transformer:
        return Transformer.from_crs(CRS.from_epsg(4326), CRS.from_user_input(self.area_crs), always_xy=True)

    @cached_property
    def land(self) -> BaseGeometry:
        """The union of every region (land, for a set that covers a country)."""
        return shapely.union_all(self._geometries)

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._index_of

    def resolve_code(self, code: str) -> str:
        """The set's spelling of a region code ('1' -> '01', '2a' -> '2A'); ClaimError if unknown."""
        text = str(code).strip()
        for candidate in (text, text.upper(), text.zfill(2), text.upper().zfill(2)):
            if candidate in self._index_of:
                return candidate
        shown = ", ".join(self.codes[:12]) + (", ..." if len(self.codes) > 12 else "")
        raise ClaimError(
            f"Region code {text!r} is not in region set {self.name!r}; use one of its codes ({shown}) "
            f"or list them with `grainproof regions list --set {self.name}`."
        )

    def name_of(self, code: str) -> str:
        """The human name of a region ('51' -> 'Marne')."""
        return str(self.frame["name"].iloc[self._index_of[self.resolve_code(code)]])

    def geometry(self, code: str) -> BaseGeometry:
        """The polygon of one region."""
        geometry: BaseGeometry = self._geometries[self._index_of[self.resolve_code(code)]]
        return geometry

    # --- point and polygon lookups -----------------------------------------------------------------

    def lookup_points(self, lon: Any, lat: Any) -> np.ndarray:
        """The region code of each point (object array; None outside every region). Vectorised."""
        lon_array = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        lat_array = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        if lon_array.shape != lat_array.shape:
            raise GrainproofError(f"lon and lat have different shapes {lon_array.shape} and {lat_array.shape}.")
        flat_lon, flat_lat = lon_array.ravel(), lat_array.ravel()
        finite = np.isfinite(flat_lon) & np.isfinite(flat_lat)
        points = shapely.points(np.where(finite, flat_lon, 0.0), np.where(finite, flat_lat, 0.0))
        # The index only narrows each point to the regions whose bounding box holds it; the exact test
        # then runs once per region on its candidates, against the prepared polygon.
        point_index, region_index = self._tree.query(points)
        order = np.argsort(region_index, kind="stable")
        point_index, region_index = point_index[order], region_index[order]
        starts = np.searchsorted(region_index, np.arange(len(self) + 1))
        found = np.full(flat_lon.shape, -1, dtype=np.int64)
        for region in range(len(self)):
            candidates = point_index[starts[region] : starts[region + 1]]
            if len(candidates) == 0:
                continue
            inside = candidates[
                shapely.intersects_xy(self._geometries[region], flat_lon[candidates], flat_lat[candidates])
            ]
            # A point on a shared border touches two regions: the first in file order wins, deterministically.
            inside = inside[found[inside] < 0]
            found[inside] = region
        found[~finite] = -1
        codes = np.asarray([*self.codes, None], dtype=object)
        result = codes[found]  # index -1 is the trailing None
        return result.reshape(lon_array.shape)

    def region_of(self, lon: float, lat: float) -> str | None:
        """The code of the region containing one point, or None outside the set; ClaimError for a point that
        cannot exist (longitude beyond ±180 or latitude beyond ±90)."""
        check_point(lon, lat)
        code = self.lookup_points(np.array([lon]), np.array([lat]))[0]
        return None if code is None else str(code)

    def nearest_region(self, lon: float, lat: float) -> tuple[str, float]:
        """The region nearest to a point and the distance to it in km (0 inside)."""
        check_point(lon, lat)
        point = shapely.Point(lon, lat)
        index = int(self._tree.nearest(point))
        nearest_on_border = nearest_points(self._geometries[index], point)[0]
        distance = float(haversine_km(lon, lat, nearest_on_border.x, nearest_on_border.y))
        return self.codes[index], distance

    def area_km2(self, geometry: BaseGeometry) -> float:
        """Area of a lon/lat geometry in km², computed in the set's equal-area projection."""
        # Densify first: a long straight lon/lat edge is a curve in the projection, and the pieces of a
        # polygon cut by borders must add up to the whole polygon.
        densified = shapely.segmentize(geometry, AREA_SEGMENT_DEG)
        projected = shapely.transform(densified, self._project)
        return float(shapely.area(projected)) / 1e6

    def _project(self, coordinates: np.ndarray) -> np.ndarray:
        x, y = self._to_area_crs.transform(coordinates[:, 0], coordinates[:, 1])
        return np.column_stack([x, y])

    def polygon_shares(self, geometry: BaseGeometry) -> dict[str, float]:
        """How a polygon's area inside the set splits across regions: {code: share}, shares sum to 1.

        Areas are computed in an equal-area projection. The part outside every region is left out
        (see `outside_share`); an empty dict means the polygon lies entirely outside the set.
        """
        candidates = self._tree.query(geometry, predicate="intersects")
        areas: dict[str, float] = {}
        for index in sorted(int(i) for i in candidates):
            piece = shapely.intersection(self._geometries[index], geometry)
            area = self.area_km2(piece) if not piece.is_empty else 0.0
            if area > 0.0:
                areas[self.codes[index]] = area
        total = sum(areas.values())
        if total <= 0.0:
            return {}
        return {code: area / total for code, area in areas.items()}

    def outside_share(self, geometry: BaseGeometry) -> float:
        """The share of a polygon's area that lies outside every region (sea, another country)."""
        total = self.area_km2(geometry)
        if total <= 0.0:
            return 0.0
        inside = self.area_km2(shapely.intersection(geometry, self.land))
        return float(min(1.0, max(0.0, 1.0 - inside / total)))

    # --- relations between regions -----------------------------------------------------------------

    @cached_property
    def _adjacency(self) -> dict[str, list[str]]:
        left, right = self._tree.query(self._geometries, predicate="dwithin", distance=NEIGHBOUR_TOLERANCE_DEG)
        adjacency: dict[str, list[str]] = {code: [] for code in self.codes}
        for i, j in zip(left.tolist(), right.tolist(), strict=True):
            if i != j:
                adjacency[self.codes[i]].append(self.codes[j])
        return {code: sorted(set(neighbours)) for code, neighbours in adjacency.items()}

    def neighbours(self, code: str) -> list[str]:
        """Codes of the regions that share a border with this one, sorted."""
        return list(self._adjacency[self.resolve_code(code)])

    @cached_property
    def _representative_points(self) -> np.ndarray:
        """Per region: its centroid if it falls inside, else the centre of its largest inscribed circle."""
        points = np.empty((len(self), 2), dtype=np.float64)
        for i, geometry in enumerate(self._geometries):
            centroid = shapely.centroid(geometry)
            if not shapely.contains(geometry, centroid):
                centroid = shapely.get_point(shapely.maximum_inscribed_circle(geometry, 1e-3), 0)
            points[i] = (centroid.x, centroid.y)
        return points

    def representative_point(self, code: str) -> tuple[float, float]:
        """A point (lon, lat) inside the region, central where possible: for markers and distances."""
        lon, lat = self._representative_points[self._index_of[self.resolve_code(code)]]
        return (float(lon), float(lat))

    def distance_km(self, a: str, b: str) -> float:
        """Great-circle distance in km between the representative points of two regions (0 for a == b)."""
        lon_a, lat_a = self.representative_point(a)
        lon_b, lat_b = self.representative_point(b)
        return float(haversine_km(lon_a, lat_a, lon_b, lat_b))

    def distance_matrix_km(self) -> np.ndarray:
        """(n, n) distances between every pair of regions, in `codes` order."""
        points = self._representative_points
        return np.asarray(
            haversine_km(points[:, None, 0], points[:, None, 1], points[None, :, 0], points[None, :, 1]),
            dtype=np.float64,
        )

    # --- sampling ----------------------------------------------------------------------------------

    def sample_points(self, code: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """n random points (lon, lat) inside a region, uniform in area; same rng state, same points."""
        if n < 0:
            raise GrainproofError(f"Cannot sample {n} points: give a count of zero or more.")
        geometry = self.geometry(code)
        min_lon, min_lat, max_lon, max_lat = shapely.bounds(geometry)
        # Uniform in lon/lat over-samples high latitudes; thin by cos(lat) to be uniform in area.
        max_cos = math.cos(math.radians(min(abs(min_lat), abs(max_lat)))) if min_lat * max_lat > 0 else 1.0
        found: list[np.ndarray] = []
        count = 0
        while count < n:
            batch = max(64, 2 * (n - count))
            lon = rng.uniform(min_lon, max_lon, batch)
            lat = rng.uniform(min_lat, max_lat, batch)
            keep = rng.uniform(0.0, max_cos, batch) <= np.cos(np.radians(lat))
            keep &= shapely.contains_xy(geometry, lon, lat)
            accepted = np.column_stack([lon[keep], lat[keep]])
            found.append(accepted)
            count += len(accepted)
        return np.concatenate(found, axis=0)[:n] if found else np.empty((0, 2), dtype=np.float64)


# --- loading and registering sets --------------------------------------------------------------------

_CACHE: dict[tuple[str, Path], tuple[float, RegionSet]] = {}


def _region_set_path(name: str, settings: Settings) -> Path:
    if name in BUILTIN_REGION_SETS:
        builtin = settings.geo_dir / f"{name}.parquet"
        if not builtin.is_file():
            raise NotFoundError(
                f"The built-in region set {name!r} was not found at {builtin}; set GRAINPROOF_GEO_DIR to the "
                "repository's geo/ folder or regenerate it with `grainproof regions build`."
            )
        return builtin
    # Names come from URLs and command lines: only safe names ever become a path.
    path = settings.region_sets_dir / f"{name}.parquet" if _SET_NAME_RE.match(name) else None
    if path is None or not path.is_file():
        known = ", ".join(list_region_sets(settings))
        raise NotFoundError(
            f"Unknown region set {name!r}; known sets: {known}. "
            "Register your own with `grainproof regions import FILE --code-column C --name NAME`."
        )
    return path


def load_region_set(name: str, *, settings: Settings | None = None) -> RegionSet:
    """A region set by name: built-in (`fr-departements`, `fr-regions`) or registered by a user. Cached."""
    settings = settings or get_settings()
    path = _region_set_path(name, settings)
    mtime = path.stat().st_mtime
    cached = _CACHE.get((name, path))
    if cached is not None and cached[0] == mtime:
        return cached[1]
    region_set = RegionSet(name=name, frame=gpd.read_parquet(path))
    _CACHE[(name, path)] = (mtime, region_set)
    return region_set


def list_region_sets(settings: Settings | None = None) -> list[str]:
    """Names of every available set: built-in ones first, then user-registered ones."""
    settings = settings or get_settings()
    names = [n for n in BUILTIN_REGION_SETS if (settings.geo_dir / f"{n}.parquet").is_file()]
    if settings.region_sets_dir.is_dir():
        names += sorted(p.stem for p in settings.region_sets_dir.glob("*.parquet") if p.stem not in names)
    return names


def import_region_set(
    source: Path,
    *,
    name: str,
    code_column: str,
    name_column: str | None = None,
    settings: Settings | None = None,
    overwrite: bool = False,
) -> RegionSet:
    """Register a user region set from any file geopandas reads (GeoJSON, GeoPackage, Shapefile, GeoParquet).

    Geometries are reprojected to WGS84, repaired where invalid, and regions that share a code are
    merged. The set is stored as GeoParquet in `settings.region_sets_dir`.
    """
    settings = settings or get_settings()
    if not _SET_NAME_RE.match(name):
        raise GrainproofError(
            f"Region set name {name!r} is not allowed: use lowercase letters, digits, '-' and '_' (e.g. my-coop-zones)."
        )
    if name in BUILTIN_REGION_SETS:
        raise GrainproofError(f"{name!r} is a built-in region set; choose another name for yours.")
    target = settings.region_sets_dir / f"{name}.parquet"
    if target.exists() and not overwrite:
        raise GrainproofError(f"A region set named {name!r} already exists; pass --overwrite to replace it.")
    frame = _read_geofile(source)
    if code_column not in frame.columns:
        columns = ", ".join(c for c in frame.columns if c != frame.geometry.name)
        raise GrainproofError(f"{source} has no column {code_column!r}; its columns are: {columns}.")
    if name_column is not None and name_column not in frame.columns:
        raise GrainproofError(f"{source} has no column {name_column!r} for region names.")
    if frame.crs is None:
        raise GrainproofError(
            f"{source} does not say which coordinate reference system it uses; save it with a CRS "
            "(GeoJSON is always WGS84) and import it again."
        )
    frame = frame.to_crs("EPSG:4326")
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    frame = frame[frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if len(frame) == 0:
        raise GrainproofError(f"{source} has no polygons: a region set needs polygon geometries.")
    if frame[code_column].isna().any():
        raise GrainproofError(f"Some regions in {source} have no value in {code_column!r}; fill them and retry.")
    codes = frame[code_column].astype(str).str.strip()
    names = frame[name_column].astype(str) if name_column else codes
    repaired = shapely.make_valid(frame.geometry.to_numpy())
    merged: dict[str, list[BaseGeometry]] = {}
    region_names: dict[str, str] = {}
    for code, region_name, geometry in zip(codes, names, repaired, strict=True):
        merged.setdefault(code, []).append(geometry)
        region_names.setdefault(code, region_name)
    geometries = [_polygon_parts(shapely.union_all(parts)) for parts in merged.values()]
    clean = gpd.GeoDataFrame(
        {"code": list(merged), "name": [region_names[c] for c in merged]}, geometry=geometries, crs="EPSG:4326"
    )
    region_set = RegionSet(name=name, frame=clean)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    clean.to_parquet(tmp, index=False)
    tmp.replace(target)
    _CACHE.pop((name, target), None)
    return region_set


def _polygon_parts(geometry: BaseGeometry) -> BaseGeometry:
    polygons = [p for p in shapely.get_parts(geometry) if p.geom_type == "Polygon" and not p.is_empty]
    return shapely.multipolygons(polygons) if len(polygons) > 1 else polygons[0]


def _read_geofile(source: Path) -> gpd.GeoDataFrame:
    if not source.exists():
        raise GrainproofError(f"{source} does not exist.")
    try:
        if source.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(source)
        return gpd.read_file(source)
    except Exception as exc:  # any reader failure is a file the user must fix
        raise GrainproofError(
            f"Could not read {source} as a geographic file ({exc}); use GeoJSON, GeoPackage, Shapefile or GeoParquet."
        ) from None


def region_values_frame(region_set: RegionSet, values: Mapping[str, float]) -> gpd.GeoDataFrame:
    """The set's frame with a `value` column (NaN where no value was given); for maps and exports."""
    frame = region_set.frame[["code", "name", "geometry"]].copy()
    resolved = {region_set.resolve_code(code): float(value) for code, value in values.items()}
    frame["value"] = [resolved.get(code, np.nan) for code in region_set.codes]
    return frame
