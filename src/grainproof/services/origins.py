"""Origin units of lots and claims: the declared region, or the region a point or field falls in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from grainproof.domain import Claim, LotRecord
from grainproof.errors import ClaimError

if TYPE_CHECKING:
    from grainproof.geo import RegionSet
    from grainproof.geo.claims import ResolvedOrigin


def load_regions(name: str | None) -> RegionSet | None:
    """The named region set (GEO), or None; geopandas is imported only when one is asked for."""
    if not name:
        return None
    from grainproof.geo import load_region_set

    return load_region_set(name)


def lot_origin_units(lots: Sequence[LotRecord], region_set: RegionSet | None) -> list[str]:
    """Origin unit of each reference lot: its region code, else (with a region set) the region of its point."""
    units: list[str | None] = [lot.claim.origin.region for lot in lots]
    if region_set is not None:
        units = [region_set.resolve_code(u) if u else None for u in units]
        todo = [i for i, u in enumerate(units) if u is None and lots[i].claim.origin.has_point]
        if todo:
            lon = np.array([lots[i].claim.origin.lon for i in todo], dtype=float)
            lat = np.array([lots[i].claim.origin.lat for i in todo], dtype=float)
            for i, code in zip(todo, region_set.lookup_points(lon, lat), strict=True):
                units[i] = None if code is None else str(code)
        todo = [i for i, u in enumerate(units) if u is None and lots[i].claim.origin.geometry_geojson]
        for i in todo:
            units[i] = claim_origin_unit(lots[i].claim, region_set)[0]
    missing = [lots[i].lot_id for i, u in enumerate(units) if not u]
    if missing:
        hint = "give a region code" if region_set is None else f"their point lies outside {region_set.name}"
        raise ClaimError(f"Lot(s) {', '.join(missing[:5])} have no origin unit: {hint}.")
    return [str(u) for u in units]


def claim_origin_unit(
    claim: Claim,
    region_set: RegionSet | None,
    *,
    zone_members: Mapping[str, Sequence[Sequence[float]]] | None = None,
    zone_reach_km: float = 0.0,
) -> tuple[str, tuple[str, ...]]:
    """The origin unit a claim declares and any warnings from validating it (GEO's EUDR checks).

    With `zone_members` (a model built on provenance zones) the unit is the zone the declared point
    falls in, else 'region:<code>' of its region.
    """
    if zone_members:
        if region_set is None:
            raise ClaimError("A zone-based reference model needs its region set; rebuild it with --region-set.")
        resolved, region = _resolved_origin(claim, region_set)
        # The declared point, else the field's representative point; a bare region code places no point.
        if resolved.point is not None and (claim.origin.has_point or claim.origin.geometry_geojson):
            zone = zone_of_point(resolved.point[0], resolved.point[1], zone_members, zone_reach_km)
            if zone is not None:
                return zone, tuple(resolved.warnings)
        return f"region:{region}", tuple(resolved.warnings)
    if region_set is None:
        if not claim.origin.region:
            raise ClaimError(
                f"Claim {claim.lot_id} declares no region code and the reference model has no region set to "
                "place its point in; give the region, or build the model with --region-set."
            )
        return claim.origin.region, ()
    resolved, region = _resolved_origin(claim, region_set)
    return region, tuple(resolved.warnings)


def _resolved_origin(claim: Claim, region_set: RegionSet) -> tuple[ResolvedOrigin, str]:
    """The claim's origin checked against the region set (EUDR conventions), and its main region."""
    from grainproof.geo.claims import validate_origin

    resolved = validate_origin(claim.origin, region_set)
    if resolved.primary_region is None:
        raise ClaimError(f"Claim {claim.lot_id}: its origin is outside the region set {region_set.name}.")
    return resolved, resolved.primary_region


#: Zone members kept in the model per zone (enough to place a declared point, small in the manifest).
MAX_ZONE_MEMBERS = 200
ORIGIN_UNIT_KINDS = ("regions", "zones")


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneUnits:
    """Origin units from provenance zones: each lot's unit, and what placing a new point needs."""

    units: list[str]
    members: dict[str, list[list[float]]]
    reach_km: float
    adjacency: dict[str, list[str]]


def zone_origin_units(lots: Sequence[LotRecord], region_set: RegionSet) -> ZoneUnits:
    """Provenance zones (GEO's HDBSCAN) of the reference lots as origin units: 'zone:<k>', else 'region:<code>'.

    Lots in a well-populated zone get the zone; the others (and lots without a point) their region.
    """
    from grainproof.geo.regions import haversine_km
    from grainproof.geo.zones import ProvenanceZones

    with_point = [i for i, lot in enumerate(lots) if lot.claim.origin.has_point]
    if len(with_point) < 2:
        raise ClaimError("Provenance zones need reference lots with points (lon, lat); use --origin-units regions.")
    lon = np.array([lots[i].claim.origin.lon for i in with_point], dtype=float)
    lat = np.array([lots[i].claim.origin.lat for i in with_point], dtype=float)
    zones = ProvenanceZones(region_set=region_set.name).fit(lon, lat)
    units = [f"region:{u}" for u in lot_origin_units(lots, region_set)]
    for position, unit in zip(with_point, zones.units_.tolist(), strict=True):
        units[position] = str(unit)
    members: dict[str, list[list[float]]] = {}
    nearest: list[float] = []
    for label in sorted({u for u in units if u.startswith("zone:")}):
        rows = [j for j, i in enumerate(with_point) if units[i] == label]
        order = sorted(rows, key=lambda j: lots[with_point[j]].lot_id)[:MAX_ZONE_MEMBERS]
        members[label] = [[float(lon[j]), float(lat[j])] for j in order]
        pts = np.array(members[label])
        if len(pts) > 1:
            d = haversine_km(pts[:, 0][:, None], pts[:, 1][:, None], pts[:, 0][None, :], pts[:, 1][None, :])
            np.fill_diagonal(d, np.inf)
            nearest.extend(np.min(d, axis=1).tolist())
    # A declared point belongs to a zone when it is about as close to a member as members are to each other.
    reach = max(10.0, 3.0 * float(np.median(nearest))) if nearest else 10.0
    adjacency = {f"region:{c}": [f"region:{n}" for n in region_set.neighbours(c)] for c in region_set.codes}
    return ZoneUnits(units=units, members=members, reach_km=reach, adjacency=adjacency)


def zone_of_point(
    lon: float, lat: float, members: Mapping[str, Sequence[Sequence[float]]], reach_km: float
) -> str | None:
    """The zone whose nearest member lies within reach of the point, or None."""
    from grainproof.geo.regions import haversine_km

    best, best_km = None, reach_km
    for label, points in sorted(members.items()):
        pts = np.asarray(points, dtype=float)
        distance = float(np.min(haversine_km(lon, lat, pts[:, 0], pts[:, 1])))
        if distance <= best_km:
            best, best_km = label, distance
    return best
