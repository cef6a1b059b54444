"""Parsing what clients send into domain types (the shapes themselves are in `grainproof.api.contract`).

Parsing collects every problem in a request before answering, so a client fixes a claim in
one round trip; each problem names the field (`claim.origin.lat must be ...`) and the API lists
them in the Problem Details' `errors`, each with a JSON pointer to the member.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from grainproof.api.gs1 import gtin_check_digit_ok, lot_problem
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


class UnsupportedMediaTypeError(GrainproofError):
    """The request body's Content-Type is not one this operation reads."""

    status_code = 415


class InvalidParameterError(GrainproofError):
    """A query or path parameter is invalid (the same kind of problem as litestar's own parameter checks)."""

    status_code = 400
    kind = "validation"

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(message)


class VectorError(GrainproofError):
    """Precomputed vectors are missing, not numbers, or of the wrong dimension."""

    status_code = 422


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem of a request body: the member it concerns (`claim.origin.lat`) and a phrase naming it."""

    field: str
    text: str

    @property
    def pointer(self) -> str:
        """The member as a JSON pointer (RFC 6901) into the request body: `#/claim/origin/lat`."""
        parts = re.split(r"\.|\[(\d+)\]", self.field)
        tokens = [p.replace("~", "~0").replace("/", "~1") for p in parts if p]
        return "#/" + "/".join(tokens)


class ClaimProblemsError(ClaimError):
    """A claim has one or more problems; `problems` lists each with the member it concerns."""

    kind = "claim"

    def __init__(self, subject: str, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__(_sentence(subject, [p.text for p in self.problems]))


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedClaim:
    """A claim as the API received it: the domain Claim plus intake details and its canonical JSON form."""

    claim: Claim
    device: str | None = None
    site: str | None = None
    gtin: str | None = None
    quantity_kg: float | None = None
    payload: dict[str, Any] = field(default_factory=dict)


class _Problems:
    """Collects a request's problems, each under the member it concerns."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[FieldProblem] = []

    def name(self, member: str) -> str:
        return f"{self.prefix}.{member}" if self.prefix else member

    def add(self, member: str, phrase: str) -> None:
        """`phrase` follows the member's name: add("origin.lat", "must be a finite number")."""
        name = self.name(member)
        self.items.append(FieldProblem(name, f"{name} {phrase}"))

    def text(self, value: Any, member: str, *, required: bool) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.add(member, "is missing")
            return None
        if not isinstance(value, str):
            self.add(member, "must be a string")
            return None
        if len(value) > _MAX_TEXT:
            self.add(member, f"is longer than {_MAX_TEXT} characters")
            return None
        return value.strip()

    def number(self, value: Any, member: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
            self.add(member, "must be a finite number")
            return None
        return float(value)


_CLAIM_FIELDS = frozenset(
    {"lot_id", "species", "variety", "device", "site", "gtin", "quantity_kg", "harvest_date", "origin"}
)


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


def parse_claim(data: Any, *, today: date | None = None, prefix: str = "claim") -> ParsedClaim:
    """The claim of a request; ClaimProblemsError listing every problem, each under its member.

    `prefix` is where the claim sits in the request body (`claim`; empty when its fields are the body's own).
    """
    if not isinstance(data, dict):
        raise ClaimProblemsError(
            "The claim",
            [
                FieldProblem(
                    prefix, f"{prefix or 'the body'} must be a JSON object with lot_id, species, variety and origin"
                )
            ],
        )
    problems = _Problems(prefix)
    lot_id = problems.text(data.get("lot_id"), "lot_id", required=True)
    species = problems.text(data.get("species"), "species", required=True)
    variety = problems.text(data.get("variety"), "variety", required=True)
    device = problems.text(data.get("device"), "device", required=False)
    site = problems.text(data.get("site"), "site", required=False)
    gtin = problems.text(data.get("gtin"), "gtin", required=False)
    if gtin is not None and not (_GTIN_RE.match(gtin) and gtin_check_digit_ok(gtin)):
        problems.add("gtin", "must be a GTIN-14 (14 digits with a valid check digit)")
        gtin = None
    if gtin is not None and lot_id is not None and (why := lot_problem(lot_id)) is not None:
        # With a GTIN the lot id becomes the GS1 batch/lot number (AI 10) of EPCIS exports.
        problems.add("lot_id", f"cannot be a GS1 batch/lot number, which a claim with a gtin needs: {why}")
    quantity = problems.number(data.get("quantity_kg"), "quantity_kg")
    if quantity is not None and quantity <= 0:
        problems.add("quantity_kg", "must be positive")
    harvest: date | None = None
    harvest_text = data.get("harvest_date")
    if harvest_text is not None:
        if not isinstance(harvest_text, str):
            problems.add("harvest_date", "must be a string YYYY-MM-DD")
        else:
            try:
                harvest = parse_harvest_date(harvest_text, today=today)
            except ClaimError as exc:
                problems.items.append(FieldProblem(problems.name("harvest_date"), problems.name(str(exc))))
    origin_data = data.get("origin")
    lon = lat = None
    region = geometry = None
    if not isinstance(origin_data, dict):
        problems.add("origin", "is missing: give an object with lon/lat, region and/or geometry (GeoJSON)")
    else:
        lon = problems.number(origin_data.get("lon"), "origin.lon")
        lat = problems.number(origin_data.get("lat"), "origin.lat")
        region = problems.text(origin_data.get("region"), "origin.region", required=False)
        if origin_data.get("geometry") is not None:
            try:
                geometry = parse_geojson(origin_data["geometry"], problems.name("origin.geometry"))
            except ClaimError as exc:
                problems.items.append(FieldProblem(problems.name("origin.geometry"), str(exc).rstrip(".")))
        unknown_origin = sorted(set(origin_data) - {"lon", "lat", "region", "geometry"})
        if unknown_origin:
            problems.add("origin", f"has unknown field(s) {', '.join(unknown_origin)}")
    unknown = sorted(set(data) - _CLAIM_FIELDS)
    if unknown:
        problems.items.append(FieldProblem(prefix, f"{prefix or 'the body'} has unknown field(s) {', '.join(unknown)}"))
    origin: Origin | None = None
    if not problems.items and isinstance(origin_data, dict):
        try:
            origin = Origin(lon=lon, lat=lat, region=region, geometry_geojson=geometry)
        except ClaimError as exc:
            problems.items.append(
                FieldProblem(problems.name("origin"), f"{problems.name('origin')}: {exc}".rstrip("."))
            )
    if problems.items or origin is None or lot_id is None or species is None or variety is None:
        raise ClaimProblemsError("The claim", problems.items)
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
