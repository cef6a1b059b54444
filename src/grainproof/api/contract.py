"""The API's contract: the typed shape of every request and response body, and the closed vocabularies.

litestar turns these msgspec Structs and enums into the OpenAPI components served at /schema, so a
client generated from /schema gets the same names. Services build plain dicts (the auditor's desk
reads them too); controllers pass them through `shaped`, which checks them against these types: a key a
service adds without adding it here fails loudly (the response types forbid unknown fields), never
silently disappears from the API.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from grainproof.store.tables import MODEL_STATUSES, REVIEW_DECISIONS, ROLES

MAX_TEXT = 200

Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$", description="sha256 of the photo file, in hex.")]
RegionCode = Annotated[str, Meta(max_length=MAX_TEXT, description="A region code of the set, e.g. a département.")]
GeoJson = Annotated[dict[str, Any], Meta(description="A GeoJSON Point, Polygon or MultiPolygon (or a Feature).")]
Device = Annotated[str, Meta(max_length=MAX_TEXT, description="The phone the photos were taken with.")]
SiteName = Annotated[str, Meta(max_length=MAX_TEXT, description="The intake site (an SGLN URN where known).")]
BackboneId = Annotated[str, Meta(max_length=MAX_TEXT, description="The embedder that produced the vectors.")]
Gtin = Annotated[
    str,
    Meta(pattern="^[0-9]{14}$", description="GTIN-14 of the product, for EPCIS.", examples=["09506000134352"]),
]


class Role(StrEnum):
    """What an API key may do: intake (verify, read its own), auditor (read all, review), admin (everything)."""

    INTAKE = "intake"
    AUDITOR = "auditor"
    ADMIN = "admin"


class ReviewDecision(StrEnum):
    """An auditor's decision on a verification."""

    CONFIRMED_FRAUD = "confirmed_fraud"
    FALSE_ALARM = "false_alarm"
    CONFIRMED_GENUINE = "confirmed_genuine"
    INCONCLUSIVE = "inconclusive"


class VerificationStatus(StrEnum):
    """`open` until an auditor records a decision, then `reviewed`."""

    OPEN = "open"
    REVIEWED = "reviewed"


class ModelStatus(StrEnum):
    """Life cycle of a reference model version built in the background."""

    QUEUED = "queued"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


class ReferenceLotSource(StrEnum):
    """How a reference lot arrived: one by one through the API, a manifest import, or a reviewed verification."""

    API = "api"
    IMPORT = "import"
    REVIEW = "review"


class QueueOrder(StrEnum):
    """`newest` first (the auditors' queue), `oldest` first (in the order they were stored: for syncing with a
    cursor), or by plausibility (`least_plausible` first: triage; pages by offset)."""

    NEWEST = "newest"
    OLDEST = "oldest"
    LEAST_PLAUSIBLE = "least_plausible"
    MOST_PLAUSIBLE = "most_plausible"


# The store keeps the vocabularies as tuples of text; the API's enums must name exactly the same values.
for _enum, _values in ((Role, ROLES), (ReviewDecision, REVIEW_DECISIONS), (ModelStatus, MODEL_STATUSES)):
    if {e.value for e in _enum} != set(_values):
        raise RuntimeError(f"grainproof.api.contract.{_enum.__name__} differs from the store's {sorted(_values)}")


# --- claims (sent at intake, and returned as stored) ---


class Origin(Struct, forbid_unknown_fields=True):
    """Where the lot grew: a point, a region code and/or a field polygon (at least one)."""

    lon: Annotated[float, Meta(ge=-180, le=180, examples=[4.031234])] | None = None
    lat: Annotated[float, Meta(ge=-90, le=90, examples=[49.254321])] | None = None
    region: (
        Annotated[str, Meta(max_length=MAX_TEXT, description="A region code of the set, e.g. a département.")] | None
    ) = None
    geometry: (
        Annotated[dict[str, Any], Meta(description="A GeoJSON Point, Polygon or MultiPolygon (or a Feature).")] | None
    ) = None


class Claim(Struct, forbid_unknown_fields=True):
    """What a miller declares about a lot at the intake."""

    lot_id: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT, examples=["L-2025-0042"])]
    species: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT, examples=["soft_wheat"])]
    variety: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT, examples=["apache"])]
    origin: Origin
    harvest_date: Annotated[date, Meta(description="Not in the future.")] | None = None
    device: Device | None = None
    site: Annotated[str, Meta(max_length=MAX_TEXT, description="The intake site (an SGLN URN where known).")] | None = (
        None
    )
    gtin: Gtin | None = None
    quantity_kg: Annotated[float, Meta(gt=0)] | None = None


CLAIM_EXAMPLE: dict[str, Any] = {
    "lot_id": "L-2025-0042",
    "species": "soft_wheat",
    "variety": "apache",
    "origin": {"region": "51"},
    "harvest_date": "2025-07-18",
    "site": "urn:epc:id:sgln:3010000.00001.0",
}


class VerificationInput(Struct, forbid_unknown_fields=True):
    """A claim with the lot's precomputed embedding (the JSON form of POST /v1/verifications)."""

    claim: Claim
    vectors: Annotated[list[float], Meta(min_length=1, description="The lot's embedding vector.")]
    unit_vectors: (
        Annotated[
            list[Annotated[list[float], Meta(min_length=1)]],
            Meta(min_length=1, description="Per-kernel or per-tile vectors (for admixture)."),
        ]
        | None
    ) = None
    backbone_id: (
        Annotated[str, Meta(max_length=MAX_TEXT, description="The embedder that produced the vectors.")] | None
    ) = None
    alpha: Annotated[float, Meta(gt=0, lt=1, description="Flag at or below this plausibility.")] | None = None


class ReferenceLotInput(Claim, forbid_unknown_fields=True, kw_only=True):
    """A reference lot of known origin: a claim's fields plus its embedding."""

    features: Annotated[list[float], Meta(min_length=1, description="The lot's embedding vector.")]
    unit_vectors: list[Annotated[list[float], Meta(min_length=1)]] | None = None
    extra: Annotated[dict[str, str], Meta(description="Free text columns kept with the lot.")] | None = None


class ReviewInput(Struct, forbid_unknown_fields=True):
    """An auditor's decision on a verification, with a note; a genuine lot may join the reference."""

    decision: ReviewDecision
    note: Annotated[str, Meta(max_length=5000)] = ""
    promote_to_reference: bool = False


class KeyInput(Struct, forbid_unknown_fields=True):
    """An API key to create: its role, a label, and the intake site it belongs to."""

    role: Role
    name: Text = ""
    site: Text | None = None


class ModelBuildInput(Struct, forbid_unknown_fields=True):
    """Options of a model build; the lots are every reference lot stored."""

    seed: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None
    region_set: Text | None = None


# --- verdicts and verifications ---


class Alternative(Struct, forbid_unknown_fields=True):
    """Another origin unit and season that could explain the lot."""

    origin_unit: str
    season: int | None
    probability: Probability
    p_value: Probability


class VarietyAlternative(Struct, forbid_unknown_fields=True):
    """Another variety of the species the lot could be, with its posterior and its p-value."""

    variety: str
    probability: Probability
    p_value: Probability


class FlaggedCheck(StrEnum):
    """A check that flagged a lot: its origin and season, its variety, or its purity."""

    ORIGIN_SEASON = "origin_season"
    VARIETY = "variety"
    PURITY = "purity"


class NearestReference(Struct, forbid_unknown_fields=True):
    """A reference lot close to the verified lot in embedding space (evidence for auditors)."""

    lot_id: str
    origin_unit: str
    season: int | None
    distance: Annotated[float, Meta(ge=0)]


class VerdictStatus(StrEnum):
    """What a verdict says of a declaration (see grainproof.domain.VERDICT_STATUSES)."""

    FLAGGED = "flagged"
    PLAUSIBLE = "plausible"
    CANNOT_FLAG = "cannot_flag"
    UNCALIBRATED = "uncalibrated"


class AlphaSource(StrEnum):
    """Who set a verdict's alpha: the service's setting, or an admin for this request."""

    SERVER = "server"
    REQUEST = "request"


class Verdict(Struct, forbid_unknown_fields=True, kw_only=True):
    """What grainproof says about a claim: calibrated p-values, the flag, and the evidence behind it.

    One field per field of `grainproof.domain.Verdict` (a unit test keeps them equal), plus
    `outside_reference_probability`, kept only for verdicts stored before December 2026; the fields those
    verdicts lack are null for them.
    """

    lot_id: str
    plausibility: Annotated[Probability, Meta(description="Conformal p-value of the declared origin and season.")]
    origin_plausibility: Probability
    season_plausibility: Probability | None
    flagged: bool
    status: (
        Annotated[
            VerdictStatus,
            Meta(
                description="flagged, plausible, cannot_flag (too few calibration lots to "
                "reach alpha) or uncalibrated; only 'plausible' says the claim fits."
            ),
        ]
        | None
    ) = None
    alpha: Annotated[float, Meta(gt=0, lt=1)]
    alpha_source: AlphaSource | None = None
    min_reachable_p: (
        Annotated[Probability, Meta(description="The smallest p-value the calibration group can give.")] | None
    ) = None
    calibration_lots: Annotated[int, Meta(ge=0)] | None = None
    reasons: list[str]
    alternatives: list[Alternative]
    outside_reference_p_value: (
        Annotated[Probability, Meta(description="Conformal p-value that the lot lies inside the reference.")] | None
    ) = None
    outside_reference: (
        Annotated[bool, Meta(description="Reported as outside every reference (that p-value at or below alpha).")]
        | None
    ) = None
    admixture: (
        Annotated[Probability, Meta(description="Share of kernels like another origin; only when significant.")] | None
    ) = None
    admixture_interval: list[Probability] | None = None
    admixture_source: str | None = None
    variety_plausibility: (
        Annotated[Probability, Meta(description="Conformal p-value that the kernels are of the declared variety.")]
        | None
    ) = None
    variety_alternatives: list[VarietyAlternative] = []
    checks_plausibility: (
        Annotated[
            Probability,
            Meta(
                description="With both the origin-and-season and the variety check: how rare the smaller of their "
                "p-values is among genuine lots; they flag only when this is at or below alpha too."
            ),
        ]
        | None
    ) = None
    purity: (
        Annotated[Probability, Meta(description="Share of kernels of the declared variety (needs photos or units).")]
        | None
    ) = None
    purity_interval: list[Probability] | None = None
    flagged_checks: list[FlaggedCheck] = []
    nearest_reference_lots: list[NearestReference]
    declared_origin_unit: str
    low_confidence: bool
    model_version: str
    warnings: list[str] = []
    outside_reference_probability: Probability | None = None


#: Fields of the API verdict that the domain verdict no longer has (stored verdicts may still carry them).
LEGACY_VERDICT_FIELDS = ("outside_reference_probability",)


class Review(Struct, forbid_unknown_fields=True, kw_only=True):
    """An auditor's decision, exactly as the audit log vouches for it."""

    id: str
    verification_id: str
    decision: ReviewDecision
    note: str
    promoted_reference_lot: str | None
    reviewer: Annotated[int, Meta(description="The id of the reviewer's API key.")] | None
    reviewer_user: Annotated[str | None, Meta(description="The named auditor who decided (desk).")] = None
    overrides: Annotated[str | None, Meta(description="The earlier review this one contradicts (four-eyes).")] = None
    created_at: datetime


class Verification(Struct, forbid_unknown_fields=True):
    """A verified claim: the declaration, the photos' hashes, the verdict, and the reviews so far."""

    id: str
    lot_id: str
    species: str
    variety: str
    site: str | None
    created_at: datetime
    status: VerificationStatus
    flagged: bool
    plausibility: Probability
    model_version: Annotated[str, Meta(description="The reference model version that produced the verdict.")]
    reference_model_id: str | None
    backbone_id: str | None
    claim: Claim
    photos: list[Sha256]
    verdict: Verdict
    reviews: list[Review]
    decision: Annotated[ReviewDecision, Meta(description="The latest review's decision.")] | None
    requested_by: Annotated[int, Meta(description="The id of the intake's API key.")] | None


class VerificationSummary(Struct, forbid_unknown_fields=True):
    """One line of the queue."""

    id: str
    lot_id: str
    species: str
    variety: str
    site: str | None
    created_at: datetime
    flagged: bool
    plausibility: Probability
    declared_origin_unit: str | None
    reasons: list[str]
    model_version: str
    status: VerificationStatus
    decision: ReviewDecision | None
    blind_sample: Annotated[
        bool, Meta(description="Drawn for a blind audit: an unflagged lot auditors review to measure missed frauds.")
    ] = False


class VerificationPage(Struct, forbid_unknown_fields=True):
    """A page of the queue and where the next one starts."""

    items: list[VerificationSummary]
    total: Annotated[int, Meta(ge=0, description="How many verifications match the filters, on every page.")]
    limit: int
    offset: int
    has_more: Annotated[bool, Meta(description="More verifications match after this page (now).")]
    next_cursor: (
        Annotated[
            str,
            Meta(
                description="Pass as `cursor` for the next page. With order=oldest it is always given: keep it and "
                "ask again later for what arrived since (nothing is skipped, even under concurrent inserts)."
            ),
        ]
        | None
    )


# --- reference data and keys ---


class ReferenceLot(Struct, forbid_unknown_fields=True):
    """A lot of known origin that reference models are built from (the vector's length, not the vector)."""

    lot_id: str
    species: str
    variety: str
    origin: Origin
    harvest_date: date | None
    device: str | None
    dim: Annotated[int, Meta(ge=1)]
    has_unit_vectors: bool
    photos: list[Sha256]
    extra: dict[str, str]
    source: ReferenceLotSource
    verification_id: Annotated[str, Meta(description="The reviewed verification it was promoted from.")] | None
    created_at: datetime


class ReferenceLotPage(Struct, forbid_unknown_fields=True):
    """A page of reference lots, newest first."""

    items: list[ReferenceLot]
    limit: int
    offset: int


class ImportResult(Struct, forbid_unknown_fields=True):
    """What a manifest import added (every row, or nothing)."""

    imported: Annotated[int, Meta(ge=1)]
    dim: Annotated[int, Meta(ge=1)]
    lot_ids: Annotated[list[str], Meta(description="The first 100 lot ids imported.")]
    photos: Annotated[int, Meta(ge=0, description="Photos stored with the lots (sent as `photos` parts).")] = 0


class ReferenceModel(Struct, forbid_unknown_fields=True):
    """A reference model version: its build status and whether verdicts use it."""

    id: str
    status: ModelStatus
    version: str | None
    is_active: bool
    seed: int
    region_set: str | None
    lot_count: int | None
    backbone_id: str | None
    error: Annotated[str, Meta(description="Why the build failed.")] | None
    created_at: datetime
    finished_at: datetime | None
    activated_at: datetime | None


class Key(Struct, forbid_unknown_fields=True):
    """An API key (never its secret)."""

    id: int
    prefix: Annotated[str, Meta(description="The first characters of the secret, to tell keys apart.")]
    role: Role
    name: str
    site: str | None
    created_at: datetime
    revoked_at: datetime | None


class CreatedKey(Key):
    """A new API key with its secret: this response is the only place it is ever shown."""

    key: str


# --- system ---


class Health(Struct):
    """The process answers."""

    status: Literal["ok"]


class Readiness(Struct, omit_defaults=True):
    """Whether the database is reachable and migrated, and which model version verdicts use."""

    status: Literal["ready", "not ready"]
    active_model_version: str | None = None
    detail: str | None = None


class RegionProperties(Struct):
    """A region's code and name (plus any columns of its source)."""

    code: str
    name: str


class RegionFeature(Struct):
    """One region as a GeoJSON Feature."""

    type: Literal["Feature"]
    properties: RegionProperties
    geometry: dict[str, Any]


class RegionCollection(Struct):
    """A region set as a GeoJSON FeatureCollection (WGS 84)."""

    type: Literal["FeatureCollection"]
    features: list[RegionFeature]


# --- errors ---


class ProblemItem(Struct, omit_defaults=True):
    """One problem of a request, with the body member (`pointer`) or the parameter it concerns."""

    detail: str
    pointer: Annotated[str, Meta(description="JSON pointer into the request body, e.g. #/claim/origin/lat.")] | None = (
        None
    )
    parameter: Annotated[str, Meta(description="The query, path or header parameter.")] | None = None


class Problem(Struct, omit_defaults=True):
    """An error as RFC 9457 Problem Details (media type application/problem+json)."""

    type: Annotated[str, Meta(description="A URI naming the kind of problem.")]
    title: Annotated[str, Meta(description="A short summary of that kind of problem.")]
    status: Annotated[int, Meta(ge=400, le=599)]
    detail: Annotated[str, Meta(description="What was wrong with this request and what to do, in a sentence.")]
    instance: Annotated[str, Meta(description="The path of the request that failed.")] | None = None
    errors: Annotated[list[ProblemItem], Meta(description="Every problem found, for invalid requests.")] | None = None
    incident: Annotated[str, Meta(description="For 500: the id under which the error was logged.")] | None = None


ShapeT = TypeVar("ShapeT")


def shaped(value: Any, shape: type[ShapeT]) -> ShapeT:
    """`value` (a service's plain dict or list) as the contract type; fails loudly if they ever disagree."""
    return msgspec.convert(value, shape)


class AcknowledgementInput(Struct, forbid_unknown_fields=True):
    """An auditor's acknowledgement of a monitor alert, with a note saying what was found or done."""

    note: Annotated[str, Meta(max_length=2000)] = ""


class MonitorTest(Struct, forbid_unknown_fields=True):
    """One group's sequential test (a mixture of betting e-processes) and what it says now."""

    key: Annotated[str, Meta(description="KIND:DIMENSION:GROUP, as acknowledgements name it.")]
    kind: Annotated[str, Meta(description="flag_rate (above alpha) or low_confidence (above the tolerated share).")]
    dimension: str
    group: str
    alerting: bool
    lots: Annotated[int, Meta(ge=0, description="The group's lots the test counts (since its last acknowledgement).")]
    events: Annotated[int, Meta(ge=0, description="Of them, flagged (or low-confidence).")]
    rate: Probability
    null_rate: Probability
    e_value: Annotated[float, Meta(ge=0.0, description="The e-process now: evidence against the null rate.")]
    max_e_value: float
    threshold: Annotated[float, Meta(description="The e-value at which the group alerts (its share of the budget).")]
    alert_after_lots: int | None
    alerted_at: datetime | None
    since: datetime | None
    last_acknowledged_at: datetime | None
    last_acknowledged_by: str | None
    summary: str


class WeeklyRate(Struct, forbid_unknown_fields=True):
    """One group's week: verdicts, flags, the flag rate with its exact 95 % interval and alpha's 95 % band."""

    dimension: str
    group: str
    week: Annotated[date, Meta(description="The Monday (UTC) the week starts on.")]
    lots: int
    flagged: int
    low_confidence: int
    flag_rate: Probability
    flag_rate_interval: list[Probability]
    alpha_band: Annotated[
        list[Probability], Meta(description="Rates a week of this many genuine lots shows 95 % of the time.")
    ]
    above_band: bool
    low_confidence_share: Probability


class CalibrationReport(Struct, forbid_unknown_fields=True):
    """Weekly flag rates of one dimension's groups against alpha, and each group's tests."""

    dimension: str
    alpha: Probability
    low_confidence_share: Probability
    false_alert_rate: Probability
    test: str
    lots: int
    weeks: list[WeeklyRate]
    groups: list[MonitorTest]


class Acknowledgement(Struct, forbid_unknown_fields=True):
    """An alert acknowledgement as the audit log records it."""

    id: str
    alert_key: str
    note: str
    acknowledged_by: int | None
    acknowledged_by_user: str | None
    created_at: datetime


class ShareEstimate(Struct, forbid_unknown_fields=True):
    """An estimated share with its interval (None: nothing reviewed yet)."""

    events: int
    reviewed: int
    share: Probability | None
    interval: list[Probability]
    level: Probability
    method: Annotated[str, Meta(description="clopper-pearson, or wilson-kish when audit rates differ.")]


class BlindAuditEstimate(Struct, forbid_unknown_fields=True):
    """Missed-fraud share among unflagged lots and false-alarm share among flagged ones, of a month and site."""

    period: Annotated[str, Meta(description="YYYY-MM, or all.")]
    site: Annotated[str, Meta(description="An intake site, or all.")]
    unflagged_lots: int
    flagged_lots: int
    blind_samples: int
    blind_reviewed: int
    flagged_reviewed: int
    flag_review_coverage: Probability | None
    missed_fraud_share: ShareEstimate
    false_alarm_share: ShareEstimate


class BlindAuditReport(Struct, forbid_unknown_fields=True):
    audit_rate: Probability
    level: Probability
    estimates: list[BlindAuditEstimate]


class SeasonAge(Struct, forbid_unknown_fields=True):
    season: int | None
    lots: int
    newest_added_at: datetime
    age_days: float


class VarietyStaleness(Struct, forbid_unknown_fields=True):
    """One variety's reference: lots per season and their age, thin-cell share, and whether a refresh is due."""

    species: str
    variety: str
    seasons: list[SeasonAge]
    newest_season: int | None
    newest_declared_season: int | None
    verifications: int
    thin_cell_verifications: int
    thin_cell_share: Probability | None
    thin_cell_share_interval: list[Probability]
    refresh_due: bool
    reasons: list[str]


class StalenessReport(Struct, forbid_unknown_fields=True):
    as_of: datetime
    recent_days: int
    max_age_days: float
    varieties: list[VarietyStaleness]
