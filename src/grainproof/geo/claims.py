"""Validation of declared origins, following the EU deforestation regulation's geolocation conventions.

EUDR (Regulation (EU) 2023/1115) geolocation, as traceability teams already produce it: WGS84,
longitude before latitude (GeoJSON order), at least six decimals, polygons closed, valid and not
self-intersecting, and a plot of more than 4 ha described by a polygon rather than a single point.

Our choices where the regulation leaves room (documented in docs/geography.md):
- Fewer than six decimals is a warning by default and an error with `strict=True`. A coordinate that
  reaches us as a float has lost its trailing zeros ("4.500000" reads as 4.5), so the declaration's
  precision is taken from its most precise coordinate; refusing by default would reject honest
  declarations at the intake.
- Points within `BORDER_TOLERANCE_KM` of the declared region, or of the coast, are accepted with a
  warning: the built-in region borders are simplified by a few hundred metres.
- A point further from its declared region, a point in the sea or outside the region set, an open or
  self-intersecting ring, and a >4 ha plot given as a point are errors (ClaimError), each one sentence.

Nothing here raises anything but ClaimError for bad input, whatever the GeoJSON looks like.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import shapely
from pyproj import Geod
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import nearest_points

from grainproof.domain import Origin
from grainproof.errors import ClaimError
from grainproof.geo.regions import RegionSet, haversine_km

#: EUDR: geolocation coordinates carry at least six decimal digits (about 0.1 m).
EUDR_MIN_DECIMALS = 6
#: EUDR: a plot of land larger than this is described by a polygon, not a point.
EUDR_POINT_MAX_AREA_HA = 4.0
#: Distance within which a point still counts as in its declared region (simplified borders, GPS error).
BORDER_TOLERANCE_KM = 1.0
#: Guards against absurd uploads: a field polygon has hundreds of vertices, not millions.
MAX_GEOJSON_CHARS = 2_000_000
MAX_VERTICES = 100_000
#: A declared area this far from the polygon's measured area is worth a warning (ratio).
AREA_MISMATCH_RATIO = 1.5
#: Larger than any single field: worth a warning (100 km²).
LARGE_PLOT_HA = 10_000.0

_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedOrigin:
    """A declared origin after validation: where it is in terms of the region set, and what to warn about.

    `region_shares` maps region codes to the share of the origin in each (sums to 1; a point or a
    region code gives one region with share 1; empty when no region set was used and no region was
    declared). `point` is (lon, lat): the declared point, else the polygon's representative point.
    """

    region_shares: Mapping[str, float]
    point: tuple[float, float] | None
    warnings: tuple[str, ...] = ()
    region_set: str | None = None
    declared_region: str | None = None
    geometry: BaseGeometry | None = field(default=None, compare=False)
    area_ha: float | None = None

    def __post_init__(self) -> None:
        if any(not 0.0 <= share <= 1.0 + 1e-9 for share in self.region_shares.values()):
            raise ValueError("region shares must lie in [0, 1]")
        if self.region_shares and abs(sum(self.region_shares.values()) - 1.0) > 1e-6:
            raise ValueError("region shares must sum to 1")

    @property
    def primary_region(self) -> str | None:
        """The region holding the largest share of the origin (ties: smallest code)."""
        if not self.region_shares:
            return None
        return min(self.region_shares, key=lambda code: (-self.region_shares[code], code))


def count_decimals(value: float | str) -> int:
    """Decimals a coordinate was given with, as far as its text shows (trailing zeros do not count)."""
    try:
        exponent = Decimal(str(value).strip() if isinstance(value, str) else repr(float(value))).normalize()
    except (InvalidOperation, ValueError):
        return 0
    power = exponent.as_tuple().exponent
    return max(0, -power) if isinstance(power, int) else 0


def validate_origin(
    origin: Origin,
    region_set: RegionSet | None,
    *,
    declared_area_ha: float | None = None,
    strict: bool = False,
) -> ResolvedOrigin:
    """Check a declared origin and resolve it to region shares; ClaimError with one clear sentence if invalid.

    `declared_area_ha` (the plot's area, when the declaration gives it) enables the EUDR rule that a plot
    over 4 ha needs a polygon. `strict=True` turns "fewer than six decimals" from a warning into an error.
    """
    warnings: list[str] = []
    if declared_area_ha is not None and (not math.isfinite(declared_area_ha) or declared_area_ha <= 0):
        raise ClaimError(f"Declared plot area {declared_area_ha} ha is not a positive number of hectares.")

    declared_region = region_set.resolve_code(origin.region) if (origin.region and region_set) else origin.region

    geometry: BaseGeometry | None = None
    point: tuple[float, float] | None = None
    if origin.geometry_geojson:
        geometry = parse_geojson_geometry(origin.geometry_geojson)
        if isinstance(geometry, Point):
            point = (geometry.x, geometry.y)
            geometry = None
    if origin.lon is not None and origin.lat is not None:
        if point is not None and (abs(point[0] - origin.lon) > 1e-9 or abs(point[1] - origin.lat) > 1e-9):
            raise ClaimError(
                "The origin gives two different points (lon/lat and a GeoJSON point); declare one location."
            )
        point = (origin.lon, origin.lat)

    _check_precision(geometry, point, strict=strict, warnings=warnings)

    area_ha: float | None = None
    if geometry is not None:
        area_ha = polygon_area_ha(geometry)
        if area_ha > LARGE_PLOT_HA:
            warnings.append(
                f"The field polygon covers {area_ha:,.0f} ha, more than any single field; check that it is the plot."
            )
        if declared_area_ha is not None and not (
            1 / AREA_MISMATCH_RATIO <= declared_area_ha / max(area_ha, 1e-12) <= AREA_MISMATCH_RATIO
        ):
            warnings.append(
                f"The declared area ({declared_area_ha:g} ha) differs from the polygon's area ({area_ha:.2f} ha)."
            )
        if point is not None and shapely.distance(geometry, Point(point)) > 0:
            lon, lat = point
            gap_km = _gap_km(geometry, Point(point))
            if gap_km > BORDER_TOLERANCE_KM:
                raise ClaimError(
                    f"The declared point ({lon}, {lat}) lies {gap_km:.1f} km outside the declared field polygon; "
                    "declare a point inside the field, or only the polygon."
                )
    elif point is not None and declared_area_ha is not None and declared_area_ha > EUDR_POINT_MAX_AREA_HA:
        raise ClaimError(
            f"The plot covers {declared_area_ha:g} ha: under the EU deforestation regulation a plot over "
            f"{EUDR_POINT_MAX_AREA_HA:g} ha must be described by a polygon (origin_geojson), not a single point."
        )

    if region_set is None:
        shares: dict[str, float] = {declared_region: 1.0} if declared_region else {}
        anchor = point if point is not None else _representative_lon_lat(geometry)
        return ResolvedOrigin(
            region_shares=shares,
            point=anchor,
            warnings=tuple(warnings),
            declared_region=declared_region,
            geometry=geometry,
            area_ha=area_ha,
        )

    if geometry is not None:
        shares = _resolve_polygon(geometry, region_set, declared_region, warnings)
        anchor = point if point is not None else _representative_lon_lat(geometry)
    elif point is not None:
        shares = {_resolve_point(point, region_set, declared_region, warnings): 1.0}
        anchor = point
    else:
        assert declared_region is not None  # Origin guarantees a point, a polygon or a region
        shares = {declared_region: 1.0}
        anchor = region_set.representative_point(declared_region)
    return ResolvedOrigin(
        region_shares=shares,
        point=anchor,
        warnings=tuple(warnings),
        region_set=region_set.name,
        declared_region=declared_region,
        geometry=geometry,
        area_ha=area_ha,
    )


def _representative_lon_lat(geometry: BaseGeometry | None) -> tuple[float, float] | None:
    if geometry is None:
        return None
    inside = shapely.point_on_surface(geometry)
    return (float(inside.x), float(inside.y))


def _check_precision(
    geometry: BaseGeometry | None, point: tuple[float, float] | None, *, strict: bool, warnings: list[str]
) -> None:
    values: list[float] = list(point) if point is not None else []
    if geometry is not None:
        values.extend(float(v) for v in shapely.get_coordinates(geometry).ravel()[:2000])
    if not values:
        return
    # A GPS exports every coordinate at one precision, and a float hides trailing zeros (4.500000 reads
    # 4.5), so the declaration's precision is that of its most precise coordinate: a genuine six-decimal
    # point then looks imprecise only when both coordinates end in zero (1 in 100).
    decimals = max(count_decimals(v) for v in values)
    if decimals >= EUDR_MIN_DECIMALS:
        return
    metres = 111_320 * 10.0**-decimals
    message = (
        f"Coordinates are given with only {decimals} decimal(s) (about {metres:,.0f} m); the EU deforestation "
        f"regulation asks for at least {EUDR_MIN_DECIMALS} decimals: export them from the GPS at full precision."
    )
    if strict:
        raise ClaimError(message)
    warnings.append(message)


def _resolve_point(
    point: tuple[float, float], region_set: RegionSet, declared_region: str | None, warnings: list[str]
) -> str:
    lon, lat = point
    found = region_set.region_of(lon, lat)
    if found is None:
        nearest, distance = region_set.nearest_region(lon, lat)
        if distance <= BORDER_TOLERANCE_KM:
            warnings.append(
                f"The point ({lon}, {lat}) lies {distance * 1000:.0f} m outside the mapped border of "
                f"{nearest} {region_set.name_of(nearest)}; it was taken to be in {nearest}."
            )
            found = nearest
        else:
            raise ClaimError(_outside_message(f"The point ({lon}, {lat})", lon, lat, region_set, nearest, distance))
    if declared_region is not None and found != declared_region:
        gap_km = _distance_to_region_km(lon, lat, region_set, declared_region)
        if gap_km > BORDER_TOLERANCE_KM:
            raise ClaimError(
                f"The point ({lon}, {lat}) is in {found} {region_set.name_of(found)}, {gap_km:.1f} km from the "
                f"declared region {declared_region} {region_set.name_of(declared_region)}; correct the point or "
                "the region so that they agree."
            )
        warnings.append(
            f"The point ({lon}, {lat}) lies {gap_km * 1000:.0f} m from the declared region {declared_region}, "
            f"just across the border in {found}; the declared region {declared_region} was kept."
        )
        found = declared_region
    return found


def _outside_message(subject: str, lon: float, lat: float, region_set: RegionSet, nearest: str, distance: float) -> str:
    swapped = region_set.region_of(lat, lon) if abs(lon) <= 90 else None
    if swapped is not None:
        return (
            f"{subject} is outside {region_set.name}, but ({lat}, {lon}) is in {swapped} "
            f"{region_set.name_of(swapped)}: latitude and longitude look swapped; give longitude first, "
            "then latitude (WGS84, as GeoJSON and the EU deforestation regulation do)."
        )
    where = "in the sea or outside the area covered by" if distance < 300 else "outside the area covered by"
    return (
        f"{subject} is {where} the region set {region_set.name} (nearest region: {nearest} "
        f"{region_set.name_of(nearest)}, {distance:.0f} km away); check the coordinates (WGS84 longitude, latitude)."
    )


def _distance_to_region_km(lon: float, lat: float, region_set: RegionSet, code: str) -> float:
    return _gap_km(region_set.geometry(code), Point(lon, lat))


def _gap_km(a: BaseGeometry, b: BaseGeometry) -> float:
    """Great-circle length of the shortest segment between two lon/lat geometries (0 if they meet)."""
    on_a, on_b = nearest_points(a, b)
    return float(haversine_km(on_a.x, on_a.y, on_b.x, on_b.y))


def _resolve_polygon(
    geometry: BaseGeometry, region_set: RegionSet, declared_region: str | None, warnings: list[str]
) -> dict[str, float]:
    shares = region_set.polygon_shares(geometry)
    if not shares:
        lon, lat = _representative_lon_lat(geometry) or (0.0, 0.0)
        nearest, distance = region_set.nearest_region(lon, lat)
        if distance > BORDER_TOLERANCE_KM:
            raise ClaimError(_outside_message("The field polygon", lon, lat, region_set, nearest, distance))
        warnings.append(f"The field polygon lies just outside the mapped border of {nearest}; taken to be in it.")
        shares = {nearest: 1.0}
    outside = region_set.outside_share(geometry)
    if outside > 0.01:
        warnings.append(
            f"{outside:.0%} of the field polygon lies outside the region set {region_set.name} (sea or abroad)."
        )
    if declared_region is not None:
        declared_share = shares.get(declared_region, 0.0)
        if declared_share == 0.0:
            gap_km = _gap_km(geometry, region_set.geometry(declared_region))
            if gap_km > BORDER_TOLERANCE_KM:
                main = max(shares, key=lambda c: shares[c])
                raise ClaimError(
                    f"The field polygon lies in {main} {region_set.name_of(main)}, not in the declared region "
                    f"{declared_region} {region_set.name_of(declared_region)}; correct the polygon or the region."
                )
        if declared_share < 0.5:
            warnings.append(
                f"Only {declared_share:.1%} of the field polygon lies in the declared region {declared_region}."
            )
    return shares


def polygon_area_ha(geometry: BaseGeometry) -> float:
    """Geodesic area of a lon/lat polygon in hectares (WGS84 ellipsoid), whatever the region set."""
    area_m2, _ = _GEOD.geometry_area_perimeter(geometry)
    return abs(float(area_m2)) / 10_000.0


# --- GeoJSON parsing: strict, and every failure a ClaimError -----------------------------------------


def parse_geojson_geometry(text: str) -> BaseGeometry:
    """A Polygon, MultiPolygon or Point from GeoJSON text (geometry, Feature or FeatureCollection).

    Checks what EUDR files get wrong: lon/lat ranges, ring closure, ring length, self-intersections.
    """
    if not isinstance(text, str):
        raise ClaimError("The origin geometry must be GeoJSON text.")
    if len(text) > MAX_GEOJSON_CHARS:
        raise ClaimError(
            f"The origin GeoJSON is {len(text):,} characters long, more than {MAX_GEOJSON_CHARS:,}; "
            "simplify the field polygon."
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ClaimError(f"The origin geometry is not valid JSON ({_short(exc)}); give GeoJSON text.") from None
    geometries = _geometries_of(data)
    if not geometries:
        raise ClaimError("The origin GeoJSON contains no geometry; give a Polygon, MultiPolygon or Point.")
    if len(geometries) == 1:
        return geometries[0]
    if any(isinstance(g, Point) for g in geometries):
        raise ClaimError("The origin GeoJSON mixes points and polygons; declare one point or the field polygons.")
    polygons: list[Polygon] = []
    for geometry in geometries:
        polygons.extend(shapely.get_parts(geometry))
    merged = MultiPolygon(polygons)
    if not merged.is_valid:
        raise ClaimError(
            f"The field polygons of the origin overlap each other ({shapely.is_valid_reason(merged)}); "
            "declare each plot once."
        )
    return merged


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _geometries_of(data: Any) -> list[BaseGeometry]:
    if not isinstance(data, dict):
        raise ClaimError("The origin GeoJSON must be an object with a 'type' (Polygon, MultiPolygon, Feature, ...).")
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise ClaimError("The origin FeatureCollection has no 'features' list.")
        geometries: list[BaseGeometry] = []
        for feature in features:
            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                raise ClaimError("Every element of the FeatureCollection's 'features' must be a Feature.")
            geometries.extend(_geometries_of(feature))
        return geometries
    if kind == "Feature":
        geometry = data.get("geometry")
        if geometry is None:
            raise ClaimError("A Feature of the origin GeoJSON has no geometry.")
        return _geometries_of(geometry)
    if kind in ("Polygon", "MultiPolygon", "Point"):
        return [_geometry_from(kind, data.get("coordinates"))]
    if kind in ("LineString", "MultiLineString", "MultiPoint", "GeometryCollection"):
        raise ClaimError(f"The origin geometry is a {kind}; declare a Point or a Polygon (EUDR geolocation).")
    raise ClaimError(
        f"Unknown GeoJSON type {_short(ValueError(repr(kind)))}; expected Polygon, MultiPolygon, Point, "
        "Feature or FeatureCollection."
    )


def _position(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise ClaimError(f"{where}: a position must be [longitude, latitude] (optionally with altitude).")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ClaimError(f"{where}: coordinates must be numbers.")
    try:
        lon, lat = float(value[0]), float(value[1])
    except OverflowError:
        raise ClaimError(f"{where}: coordinates are far too large to be longitude and latitude.") from None
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ClaimError(f"{where}: coordinates must be finite numbers.")
    if not -180.0 <= lon <= 180.0:
        raise ClaimError(f"{where}: longitude {lon} is outside [-180, 180] (GeoJSON order is longitude, latitude).")
    if not -90.0 <= lat <= 90.0:
        raise ClaimError(f"{where}: latitude {lat} is outside [-90, 90] (GeoJSON order is longitude, latitude).")
    return lon, lat


def _ring(value: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(value, list | tuple):
        raise ClaimError(f"{where}: a ring must be a list of positions.")
    if len(value) > MAX_VERTICES:
        raise ClaimError(f"{where}: more than {MAX_VERTICES:,} vertices; simplify the field polygon.")
    positions = [_position(p, f"{where}, vertex {i + 1}") for i, p in enumerate(value)]
    if len(positions) < 4:
        raise ClaimError(f"{where}: a ring needs at least 4 positions (3 corners and the first repeated to close it).")
    if positions[0] != positions[-1]:
        raise ClaimError(f"{where}: the ring is not closed; repeat the first position as the last one.")
    return positions


def _polygon(value: Any, where: str) -> Polygon:
    if not isinstance(value, list | tuple) or not value:
        raise ClaimError(f"{where}: a Polygon's coordinates must be a non-empty list of rings.")
    rings = [_ring(r, f"{where}, ring {i + 1}") for i, r in enumerate(value)]
    try:
        polygon = Polygon(rings[0], rings[1:])
    except (ValueError, TypeError, shapely.errors.ShapelyError) as exc:
        raise ClaimError(f"{where}: not a usable polygon ({_short(exc)}).") from None
    if not polygon.is_valid:
        reason = shapely.is_valid_reason(polygon)
        raise ClaimError(
            f"{where}: the polygon is not valid ({reason}); its edges must not cross or touch each other "
            "(no self-intersection) and holes must lie inside the outer ring."
        )
    if polygon.is_empty or polygon.area <= 0.0:
        raise ClaimError(f"{where}: the polygon has no area (its corners are on one line).")
    return polygon


def _geometry_from(kind: str, coordinates: Any) -> BaseGeometry:
    if kind == "Point":
        lon, lat = _position(coordinates, "Point")
        return Point(lon, lat)
    if kind == "Polygon":
        return _polygon(coordinates, "Polygon")
    if not isinstance(coordinates, list | tuple) or not coordinates:
        raise ClaimError("MultiPolygon: coordinates must be a non-empty list of polygons.")
    polygons = [_polygon(p, f"MultiPolygon part {i + 1}") for i, p in enumerate(coordinates)]
    multi = MultiPolygon(polygons)
    if not multi.is_valid:
        raise ClaimError(f"MultiPolygon: its parts overlap ({shapely.is_valid_reason(multi)}); declare each plot once.")
    return multi
