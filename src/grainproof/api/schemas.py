"""What clients send and get back: the JSON shapes of the API, and their parsing into domain types.

Parsing collects every problem in a request before answering, so a client fixes a claim in
one round trip; each problem names the field (`claim.origin.lat: ...`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from grainproof.domain import Claim, Origin
from grainproof.errors import ClaimError, GrainproofError
from grainproof.manifest import parse_harvest_date

_GTIN_RE = re.compile(r"^\d{14}$")
_MAX_TEXT = 200
#: Deeper pages than this are a client bug, and larger numbers overflow the database's integers.
MAX_OFFSET = 1_000_000_000


class RequestError(GrainproofError):
    """The request body is malformed (not JSON, wrong shape, missing parts)."""

    status_code = 400


class VectorError(GrainproofError):
    """Precomputed vectors are missing, not numbers, or of the wrong dimension."""

    status_code = 422


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedClaim:
    """A claim as the API received it: the domain Claim plus intake details and its canonical JSON form."""

    claim: Claim
    device: str | None = None
    site: str | None = None
    gtin: str | None = None
    quantity_kg: float | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def gtin_check_digit_ok(gtin: str) -> bool:
    """GS1 mod-10 check digit of a GTIN-14."""
    digits = [int(c) for c in gtin]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(digits[:-1]))
    return (10 - total % 10) % 10 == digits[-1]


def _text(value: Any, name: str, problems: list[str], *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.append(f"{name} is missing")
        return None
    if not isinstance(value, str):
        problems.append(f"{name} must be a string")
        return None
    if len(value) > _MAX_TEXT:
        problems.append(f"{name} is longer than {_MAX_TEXT} characters")
        return None
    return value.strip()


def _number(value: Any, name: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        problems.append(f"{name} must be a finite number")
        return None
    return float(value)


def parse_geojson(value: Any, name: str = "claim.origin.geometry") -> str:
    """A field polygon or point as compact GeoJSON text; ClaimError when it is not valid GeoJSON."""
    import shapely
    from shapely.geometry import shape

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ClaimError(f"{name} is not valid GeoJSON: the text is not JSON.") from None
    if not isinstance(value, dict):
        raise ClaimError(f"{name} is not valid GeoJSON: expected a JSON object with a type.")
    geometry = value.get("geometry") if value.get("type") == "Feature" else value
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Point", "Polygon", "MultiPolygon"):
        raise ClaimError(f"{name} is not valid GeoJSON: expected a Point, Polygon or MultiPolygon geometry.")
    try:
        parsed = shape(geometry)
    except Exception as exc:  # shapely raises several types for bad coordinate arrays
        raise ClaimError(f"{name} is not valid GeoJSON: {exc}.") from None
    if parsed.is_empty:
        raise ClaimError(f"{name} is not valid GeoJSON: the geometry is empty.")
    minx, miny, maxx, maxy = parsed.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise ClaimError(f"{name} has coordinates outside longitude [-180, 180] / latitude [-90, 90].")
    if not shapely.is_valid(parsed):
        reason = shapely.is_valid_reason(parsed)
        raise ClaimError(f"{name} is not a valid polygon ({reason}); fix the ring (no self-intersections).")
    return json.dumps(geometry, separators=(",", ":"))


def parse_claim(data: Any, *, today: date | None = None) -> ParsedClaim:
    """The `claim` object of a verification request; ClaimError listing every problem."""
    if not isinstance(data, dict):
        raise ClaimError("The claim must be a JSON object with lot_id, species, variety and origin.")
    problems: list[str] = []
    lot_id = _text(data.get("lot_id"), "claim.lot_id", problems, required=True)
    species = _text(data.get("species"), "claim.species", problems, required=True)
    variety = _text(data.get("variety"), "claim.variety", problems, required=True)
    device = _text(data.get("device"), "claim.device", problems, required=False)
    site = _text(data.get("site"), "claim.site", problems, required=False)
    gtin = _text(data.get("gtin"), "claim.gtin", problems, required=False)
    if gtin is not None and not (_GTIN_RE.match(gtin) and gtin_check_digit_ok(gtin)):
        problems.append("claim.gtin must be a GTIN-14 (14 digits with a valid check digit)")
        gtin = None
    quantity = _number(data.get("quantity_kg"), "claim.quantity_kg", problems)
    if quantity is not None and quantity <= 0:
        problems.append("claim.quantity_kg must be positive")
    harvest: date | None = None
    harvest_text = data.get("harvest_date")
    if harvest_text is not None:
        if not isinstance(harvest_text, str):
            problems.append("claim.harvest_date must be a string YYYY-MM-DD")
        else:
            try:
                harvest = parse_harvest_date(harvest_text, today=today)
            except ClaimError as exc:
                problems.append(f"claim.{exc}")
    origin_data = data.get("origin")
    lon = lat = None
    region = geometry = None
    if not isinstance(origin_data, dict):
        problems.append("claim.origin is missing: give an object with lon/lat, region and/or geometry (GeoJSON)")
    else:
        lon = _number(origin_data.get("lon"), "claim.origin.lon", problems)
        lat = _number(origin_data.get("lat"), "claim.origin.lat", problems)
        region = _text(origin_data.get("region"), "claim.origin.region", problems, required=False)
        if origin_data.get("geometry") is not None:
            try:
                geometry = parse_geojson(origin_data["geometry"])
            except ClaimError as exc:
                problems.append(str(exc))
    unknown = sorted(
        set(data)
        - {"lot_id", "species", "variety", "device", "site", "gtin", "quantity_kg"}
        - {"harvest_date", "origin"}
    )
    if unknown:
        problems.append(f"claim has unknown field(s) {', '.join(unknown)}")
    origin: Origin | None = None
    if not problems and isinstance(origin_data, dict):
        try:
            origin = Origin(lon=lon, lat=lat, region=region, geometry_geojson=geometry)
        except ClaimError as exc:
            problems.append(f"claim.origin: {exc}")
    if problems or origin is None or lot_id is None or species is None or variety is None:
        raise ClaimError(_sentence("The claim", problems))
    claim = Claim(lot_id=lot_id, species=species, variety=variety, origin=origin, harvest_date=harvest)
    payload = claim_payload(claim, device=device, site=site, gtin=gtin, quantity_kg=quantity)
    return ParsedClaim(claim=claim, device=device, site=site, gtin=gtin, quantity_kg=quantity, payload=payload)


def claim_payload(
    claim: Claim,
    *,
    device: str | None = None,
    site: str | None = None,
    gtin: str | None = None,
    quantity_kg: float | None = None,
) -> dict[str, Any]:
    """The claim as stored and returned: the request shape, normalised."""
    origin = claim.origin
    return {
        "lot_id": claim.lot_id,
        "species": claim.species,
        "variety": claim.variety,
        "origin": {
            "lon": origin.lon,
            "lat": origin.lat,
            "region": origin.region,
            "geometry": json.loads(origin.geometry_geojson) if origin.geometry_geojson else None,
        },
        "harvest_date": claim.harvest_date.isoformat() if claim.harvest_date else None,
        "device": device,
        "site": site,
        "gtin": gtin,
        "quantity_kg": quantity_kg,
    }


def claim_from_payload(payload: dict[str, Any]) -> Claim:
    """The domain Claim back from its stored payload (no date-in-the-future check: it was checked on entry)."""
    origin = payload["origin"]
    geometry = origin.get("geometry")
    return Claim(
        lot_id=payload["lot_id"],
        species=payload["species"],
        variety=payload["variety"],
        origin=Origin(
            lon=origin.get("lon"),
            lat=origin.get("lat"),
            region=origin.get("region"),
            geometry_geojson=json.dumps(geometry, separators=(",", ":")) if geometry else None,
        ),
        harvest_date=date.fromisoformat(payload["harvest_date"]) if payload.get("harvest_date") else None,
    )


def _sentence(subject: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{subject} is invalid: {problems[0]}."
    return f"{subject} has {len(problems)} problems: " + "; ".join(problems) + "."


def parse_vector(value: Any, name: str) -> np.ndarray:
    """A list of finite numbers as a float64 vector; VectorError naming the field otherwise."""
    if not isinstance(value, list) or not value:
        raise VectorError(f"{name} must be a non-empty list of numbers.")
    # The common case in one pass over the element types (a lot vector has over a thousand values),
    # the exact rule (any int or float but bool) when that pass finds something else.
    exact = {type(v) for v in value} <= {int, float}
    if not exact and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise VectorError(f"{name} must contain only numbers.")
    vector = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        raise VectorError(f"{name} has NaN or infinite values.")
    return vector


def parse_unit_vectors(value: Any, dim: int, name: str = "unit_vectors") -> np.ndarray | None:
    """Per-kernel or per-tile vectors (m, dim), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise VectorError(f"{name} must be a non-empty list of vectors (or left out).")
    rows = [parse_vector(row, f"{name}[{i}]") for i, row in enumerate(value)]
    bad = [i for i, row in enumerate(rows) if row.shape[0] != dim]
    if bad:
        raise VectorError(f"{name}[{bad[0]}] has {rows[bad[0]].shape[0]} values; the lot vector has {dim}.")
    return np.vstack(rows)


#: JSON schema of the JSON form of POST /v1/verifications (the multipart form sends `claim` as a JSON part).
CLAIM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["lot_id", "species", "variety", "origin"],
    "properties": {
        "lot_id": {"type": "string", "maxLength": _MAX_TEXT},
        "species": {"type": "string", "maxLength": _MAX_TEXT, "examples": ["soft_wheat"]},
        "variety": {"type": "string", "maxLength": _MAX_TEXT},
        "origin": {
            "type": "object",
            "description": "A point (lon, lat), a region code and/or a field polygon as GeoJSON geometry.",
            "properties": {
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "region": {"type": "string"},
                "geometry": {"type": "object"},
            },
        },
        "harvest_date": {"type": "string", "format": "date"},
        "device": {"type": "string"},
        "site": {"type": "string", "description": "The intake site (an SGLN URN where known)."},
        "gtin": {"type": "string", "pattern": "^[0-9]{14}$", "description": "GTIN-14 of the product, for EPCIS."},
        "quantity_kg": {"type": "number", "exclusiveMinimum": 0},
    },
}

VERIFICATION_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["claim", "vectors"],
    "properties": {
        "claim": CLAIM_SCHEMA,
        "vectors": {"type": "array", "items": {"type": "number"}, "description": "The lot's embedding vector."},
        "unit_vectors": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "number"}},
            "description": "Per-kernel or per-tile vectors (for admixture).",
        },
        "backbone_id": {"type": "string", "description": "The embedder that produced the vectors."},
        "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    },
}

VERIFICATION_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["claim", "photos"],
    "properties": {
        "claim": {"type": "string", "description": "The claim as JSON text (see the JSON form)."},
        "photos": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "alpha": {"type": "string"},
    },
}
