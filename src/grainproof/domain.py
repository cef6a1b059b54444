"""Domain types: frozen dataclasses that check their own invariants.

A lot travels photos -> embeddings -> reference distributions -> scoring -> verdict;
these are the nouns every step shares. They do no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from grainproof.errors import ClaimError

#: Fraud kinds written by the simulator and used by `grainproof evaluate`; "genuine" is a true claim.
FRAUD_KINDS: tuple[str, ...] = (
    "genuine",
    "neighbour_origin",
    "far_origin",
    "missing_origin",
    "wrong_season",
    "admixture",
    "variety_swap",
    "variety_admixture",
)


#: The checks that can flag a lot, in the order a verdict lists them (`Verdict.flagged_checks`).
FLAGGED_CHECKS: tuple[str, ...] = ("origin_season", "variety", "purity")


#: Marker in an embedding's backbone id: "+kernels:N" means its first N features are kernel measurements
#: (sizes in mm, colours in reflectance, from the calibration card), the rest the network's embedding.
_MEASURED_TAG = "+kernels:"


def with_measured_features(backbone_id: str, count: int) -> str:
    """The backbone id of vectors that start with `count` kernel measurements."""
    return f"{backbone_id}{_MEASURED_TAG}{count}"


def measured_feature_count(backbone_id: str | None) -> int:
    """How many leading features of vectors from this backbone id are kernel measurements (0 if none)."""
    if not backbone_id or _MEASURED_TAG not in backbone_id:
        return 0
    tail = backbone_id.rsplit(_MEASURED_TAG, 1)[1]
    return int(tail) if tail.isdigit() else 0


def season_of(harvest_date: date) -> int:
    """The season (harvest year) a harvest date belongs to; northern-hemisphere cereals: the calendar year."""
    return harvest_date.year


def check_point(lon: float, lat: float) -> None:
    """ClaimError unless (lon, lat) is a WGS84 position: finite, longitude in [-180, 180], latitude in [-90, 90]."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ClaimError("Longitude and latitude must be finite numbers.")
    order = "give longitude first, then latitude, in WGS84 decimal degrees"
    if not -180.0 <= lon <= 180.0:
        raise ClaimError(f"Longitude {lon:g} is outside [-180, 180]; {order}.")
    if not -90.0 <= lat <= 90.0:
        raise ClaimError(f"Latitude {lat:g} is outside [-90, 90]; {order}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Where a lot is declared to have grown: a point, a field polygon (GeoJSON) and/or a region code."""

    lon: float | None = None
    lat: float | None = None
    region: str | None = None
    geometry_geojson: str | None = None

    def __post_init__(self) -> None:
        if (self.lon is None) != (self.lat is None):
            raise ClaimError("Give both longitude and latitude, or neither.")
        if self.lon is not None and self.lat is not None:
            check_point(self.lon, self.lat)
        if self.region is not None and not self.region.strip():
            raise ClaimError("Region code is empty.")
        if self.lon is None and self.region is None and not self.geometry_geojson:
            raise ClaimError("An origin needs a point (lon, lat), a field polygon or a region code.")

    @property
    def has_point(self) -> bool:
        return self.lon is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A declaration to verify: species, variety, origin and (optionally) harvest date of one lot."""

    lot_id: str
    species: str
    variety: str
    origin: Origin
    harvest_date: date | None = None

    def __post_init__(self) -> None:
        for name in ("lot_id", "species", "variety"):
            if not getattr(self, name).strip():
                raise ClaimError(f"The claim's {name} is empty.")

    @property
    def season(self) -> int | None:
        return season_of(self.harvest_date) if self.harvest_date else None


@dataclass(frozen=True, slots=True, kw_only=True)
class LotRecord:
    """One row of a lot manifest: a claim plus the photos or precomputed feature vector behind it."""

    claim: Claim
    device: str | None = None
    photos: tuple[str, ...] = ()
    features: tuple[float, ...] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features is not None and not all(math.isfinite(v) for v in self.features):
            raise ClaimError(f"Lot {self.claim.lot_id}: feature vector has NaN or infinite values.")

    @property
    def lot_id(self) -> str:
        return self.claim.lot_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Alternative:
    """Another origin unit and season that could explain a lot, with its posterior probability."""

    origin_unit: str
    season: int | None
    probability: float
    p_value: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0 or not 0.0 <= self.p_value <= 1.0:
            raise ValueError("probability and p_value must lie in [0, 1]")


@dataclass(frozen=True, slots=True, kw_only=True)
class VarietyAlternative:
    """Another variety of the species the lot could be, with its posterior probability and its p-value
    (the lot's variety check had it been declared)."""

    variety: str
    probability: float
    p_value: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0 or not 0.0 <= self.p_value <= 1.0:
            raise ValueError("probability and p_value must lie in [0, 1]")


@dataclass(frozen=True, slots=True, kw_only=True)
class NearestReference:
    """A reference lot close to the verified lot in embedding space, shown to auditors as evidence."""

    lot_id: str
    origin_unit: str
    season: int | None
    distance: float


#: What a verdict says of a declaration (`Verdict.status`):
#: flagged: its plausibility is at or below alpha;
#: plausible: above alpha, where the reference could have flagged it;
#: cannot_flag: too few calibration lots for any p-value to reach alpha (low confidence, never "plausible");
#: uncalibrated: no genuine reference lot could calibrate it at all (never "plausible").
VERDICT_STATUSES: tuple[str, ...] = ("flagged", "plausible", "cannot_flag", "uncalibrated")
#: Who set a verdict's alpha: the service's setting, or an admin or auditor for this one request.
ALPHA_SOURCES: tuple[str, ...] = ("server", "request")


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What grainproof says about a claim: calibrated p-values, the flag, and the evidence behind it."""

    lot_id: str
    plausibility: float
    origin_plausibility: float
    season_plausibility: float | None
    flagged: bool
    status: str
    alpha: float
    alpha_source: str
    #: The smallest p-value this declaration's calibration group can give, 1 / (calibration lots + 1).
    min_reachable_p: float
    calibration_lots: int
    reasons: tuple[str, ...]
    alternatives: tuple[Alternative, ...]
    #: Conformal p-value that the lot lies inside the reference (small: it fits no reference cell).
    outside_reference_p_value: float
    #: Whether the verdict reports the lot as outside every reference (that p-value at or below alpha).
    outside_reference: bool
    #: Share of the lot's kernels that look like another origin, and its interval: only when significant.
    admixture: float | None
    admixture_interval: tuple[float, float] | None
    admixture_source: str | None
    #: Conformal p-value that the kernels are of the declared variety (None: the species has one variety).
    variety_plausibility: float | None
    #: The other varieties, most likely first, each with its posterior and p-value.
    variety_alternatives: tuple[VarietyAlternative, ...]
    #: With both the origin-and-season and the variety check: how rare the smaller of their p-values is among
    #: genuine lots. The two flag only when it is at or below alpha too, so together they hold alpha.
    checks_plausibility: float | None
    #: Share of the lot's kernels of the declared variety, and its interval (None without per-kernel units).
    purity: float | None
    purity_interval: tuple[float, float] | None
    #: Which checks flagged the lot: "origin_season", "variety", "purity".
    flagged_checks: tuple[str, ...]
    nearest_reference_lots: tuple[NearestReference, ...]
    declared_origin_unit: str
    low_confidence: bool
    model_version: str
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("plausibility", "origin_plausibility", "outside_reference_p_value", "min_reachable_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is outside [0, 1]")
        if self.season_plausibility is not None and not 0.0 <= self.season_plausibility <= 1.0:
            raise ValueError("season_plausibility is outside [0, 1]")
        for name in ("admixture", "variety_plausibility", "checks_plausibility", "purity"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is outside [0, 1]")
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(VERDICT_STATUSES)}")
        if self.alpha_source not in ALPHA_SOURCES:
            raise ValueError(f"alpha_source {self.alpha_source!r} is not one of {', '.join(ALPHA_SOURCES)}")
        if self.flagged != (self.status == "flagged"):
            raise ValueError("a verdict is flagged exactly when its status is 'flagged'")

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON-ready plain data (the shape of `verify` output and the API response)."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["warnings"] = list(self.warnings)
        data["admixture_interval"] = list(self.admixture_interval) if self.admixture_interval else None
        data["purity_interval"] = list(self.purity_interval) if self.purity_interval else None
        data["flagged_checks"] = list(self.flagged_checks)
        return data
