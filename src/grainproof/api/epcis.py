"""EPCIS 2.0 JSON-LD export: verifications and reviews as ObjectEvents a traceability system can ingest.

Each verification is an inspection (action OBSERVE, bizStep inspecting) whose CBV `disposition`
follows the verdict: `non_conformant` when flagged, `conformant` otherwise. Each auditor's review is
a later event of the same lot with the disposition of the decision, so events never change once
exported. The lot is an LGTIN (GTIN + batch/lot number) in GS1 Digital Link form; a lot id that GS1
does not allow as a lot number (over 20 characters, or outside character set 82) leaves the event at
the product's GTIN, the lot id staying in the extension.

grainproof's outcome rides in an extension whose every key carries the `grainproof:` prefix declared in
the @context, so a JSON-LD processor expands them all (none is dropped, none collides with the EPCIS
context's aliases such as `id` or `type`). Nothing is fetched: the @context is a URL string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from msgspec import Meta, Struct, field

from grainproof.api.contract import ReviewDecision
from grainproof.api.gs1 import configured_gtin, product_uri
from grainproof.settings import Settings

if TYPE_CHECKING:
    from grainproof.api.services.verifications import TraceEvent

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
GRAINPROOF_NAMESPACE = "https://grainproof.dev/epcis/"
EPCIS_MEDIA_TYPE = "application/ld+json"
#: Intake sites that are already EPCIS locations: an SGLN URN, or a GS1 Digital Link with AI 414 (GLN).
_LOCATION_RE = re.compile(
    r"^(urn:epc:id:sgln:[0-9]+\.[0-9]*\.[!-~]+|https://[^\s/]+(/[^\s]*)?/414/[0-9]{13}(/[^\s]*)?)$"
)


class Disposition(StrEnum):
    """The CBV dispositions grainproof states: the inspection found the declaration plausible or not."""

    CONFORMANT = "conformant"
    NON_CONFORMANT = "non_conformant"


#: The disposition an auditor's decision states; an inconclusive review states none.
DECISION_DISPOSITION: dict[ReviewDecision, Disposition] = {
    ReviewDecision.CONFIRMED_FRAUD: Disposition.NON_CONFORMANT,
    ReviewDecision.FALSE_ALARM: Disposition.CONFORMANT,
    ReviewDecision.CONFIRMED_GENUINE: Disposition.CONFORMANT,
}


def _extension_name(name: str) -> str:
    """`verification_id` -> `grainproof:verificationId`."""
    head, *rest = name.split("_")
    return "grainproof:" + head + "".join(part.title() for part in rest)


class Location(Struct):
    """A read point or business location: an SGLN URN or a GS1 Digital Link."""

    id: str


class QuantityElement(Struct, omit_defaults=True, rename="camel"):
    """The lot (an LGTIN class) and its quantity when the claim gives one."""

    epc_class: Annotated[str, Meta(description="GS1 Digital Link URI of the LGTIN (or of the GTIN alone).")]
    quantity: float | None = None
    uom: Literal["KGM"] | None = None


class Inspection(Struct, kw_only=True, omit_defaults=True, rename=_extension_name):
    """grainproof's outcome of the inspection: the declaration, the p-values and the flag.

    The declared variety's check rides beside the origin's: its p-value, the share of kernels of the declared
    variety with its interval (only when the lot came with per-kernel units), and which checks flagged the lot.
    """

    verification_id: str
    lot_id: str
    species: str
    variety: str
    declared_origin_unit: str
    declared_harvest_date: date | None = None
    site: str | None = None
    plausibility: float
    origin_plausibility: float
    season_plausibility: float | None = None
    variety_plausibility: float | None = None
    purity: float | None = None
    purity_low: float | None = None
    purity_high: float | None = None
    alpha: float
    flagged: bool
    flagged_checks: list[str] = field(default_factory=list)
    low_confidence: bool
    reasons: list[str]
    model_version: str
    photo_sha256: list[str]


class AuditorReview(Struct, kw_only=True, omit_defaults=True, rename=_extension_name):
    """An auditor's decision on an earlier inspection (the note stays in grainproof)."""

    review_id: str
    verification_id: str
    decision: ReviewDecision
    promoted_reference_lot: str | None = None


class ObjectEvent(Struct, kw_only=True, omit_defaults=True):
    """One EPCIS 2.0 ObjectEvent: an inspection of the lot, or an auditor's review of one."""

    type: Literal["ObjectEvent"]
    event_time: datetime = field(name="eventTime")
    event_time_zone_offset: str = field(name="eventTimeZoneOffset")
    event_id: str = field(name="eventID")
    action: Literal["OBSERVE"]
    biz_step: Literal["inspecting"] = field(name="bizStep")
    disposition: Disposition | None = None
    quantity_list: list[QuantityElement] = field(name="quantityList")
    read_point: Location | None = field(default=None, name="readPoint")
    biz_location: Location | None = field(default=None, name="bizLocation")
    inspection: Inspection | None = field(default=None, name="grainproof:inspection")
    review: AuditorReview | None = field(default=None, name="grainproof:review")


class EpcisBody(Struct, rename="camel"):
    """The document's events."""

    event_list: list[ObjectEvent]


class EpcisDocument(Struct, kw_only=True, omit_defaults=True):
    """An EPCIS 2.0 document (JSON-LD); a page of a sync carries the cursor of the next one."""

    context: list[str | dict[str, str]] = field(name="@context")
    type: Literal["EPCISDocument"]
    schema_version: Literal["2.0"] = field(name="schemaVersion")
    creation_date: datetime = field(name="creationDate")
    epcis_body: EpcisBody = field(name="epcisBody")
    next_cursor: str | None = field(default=None, name="grainproof:nextCursor")
    has_more: bool | None = field(default=None, name="grainproof:hasMore")


def location(site: str | None) -> Location | None:
    """The intake site as an EPCIS location when it is one (SGLN, Digital Link); free text stays in grainproof's."""
    if site and _LOCATION_RE.match(site):
        return Location(id=site)
    return None


def _quantity(claim: dict[str, Any], gtin: str) -> QuantityElement:
    uri = product_uri(claim.get("gtin") or gtin, claim["lot_id"])
    if claim.get("quantity_kg"):
        return QuantityElement(epc_class=uri, quantity=float(claim["quantity_kg"]), uom="KGM")
    return QuantityElement(epc_class=uri)


def _event(
    verification: dict[str, Any],
    *,
    moment: str,
    event_uuid: str,
    disposition: Disposition | None,
    gtin: str,
    inspection: Inspection | None = None,
    review: AuditorReview | None = None,
) -> ObjectEvent:
    """An inspecting ObjectEvent of the verification's lot, at its intake site."""
    when = datetime.fromisoformat(moment)
    offset = when.strftime("%z") or "+0000"
    site = location(verification.get("site"))
    return ObjectEvent(
        type="ObjectEvent",
        event_time=when,
        event_time_zone_offset=f"{offset[:3]}:{offset[3:]}",
        event_id=f"urn:uuid:{event_uuid}",
        action="OBSERVE",
        biz_step="inspecting",
        disposition=disposition,
        quantity_list=[_quantity(verification["claim"], gtin)],
        read_point=site,
        biz_location=site,
        inspection=inspection,
        review=review,
    )


def inspection_event(verification: dict[str, Any], *, gtin: str) -> ObjectEvent:
    """The verification as an inspection event, its disposition from the verdict."""
    claim, verdict = verification["claim"], verification["verdict"]
    interval = verdict.get("purity_interval")
    outcome = Inspection(
        verification_id=verification["id"],
        lot_id=claim["lot_id"],
        species=claim["species"],
        variety=claim["variety"],
        declared_origin_unit=verdict["declared_origin_unit"],
        declared_harvest_date=date.fromisoformat(claim["harvest_date"]) if claim.get("harvest_date") else None,
        site=verification.get("site"),
        plausibility=verdict["plausibility"],
        origin_plausibility=verdict["origin_plausibility"],
        season_plausibility=verdict.get("season_plausibility"),
        variety_plausibility=verdict.get("variety_plausibility"),
        purity=verdict.get("purity"),
        purity_low=interval[0] if interval else None,
        purity_high=interval[1] if interval else None,
        alpha=verdict["alpha"],
        flagged=verdict["flagged"],
        flagged_checks=list(verdict.get("flagged_checks") or []),
        low_confidence=verdict["low_confidence"],
        reasons=list(verdict["reasons"]),
        model_version=verification["model_version"],
        photo_sha256=list(verification.get("photos", [])),
    )
    disposition = Disposition.NON_CONFORMANT if verdict["flagged"] else Disposition.CONFORMANT
    return _event(
        verification,
        moment=verification["created_at"],
        event_uuid=verification["id"],
        disposition=disposition,
        gtin=gtin,
        inspection=outcome,
    )


def review_event(verification: dict[str, Any], review: dict[str, Any], *, gtin: str) -> ObjectEvent:
    """An auditor's review as a later event of the same lot, its disposition from the decision."""
    decision = ReviewDecision(review["decision"])
    outcome = AuditorReview(
        review_id=review["id"],
        verification_id=verification["id"],
        decision=decision,
        promoted_reference_lot=review.get("promoted_reference_lot"),
    )
    return _event(
        verification,
        moment=review["created_at"],
        event_uuid=review["id"],
        disposition=DECISION_DISPOSITION.get(decision),
        gtin=gtin,
        review=outcome,
    )


def epcis_document(
    events: Sequence[TraceEvent],
    *,
    settings: Settings,
    created: datetime,
    next_cursor: str | None = None,
    has_more: bool | None = None,
) -> EpcisDocument:
    """An EPCISDocument with one ObjectEvent per verification or review, in the given order.

    Lots whose claim has no `gtin` take GRAINPROOF_GS1_GTIN; Gs1ConfigurationError when it is needed and unset.
    """
    needs_gtin = any(not event.verification["claim"].get("gtin") for event in events)
    gtin = configured_gtin(settings) if needs_gtin else ""
    event_list = [
        review_event(event.verification, event.review, gtin=gtin)
        if event.review is not None
        else inspection_event(event.verification, gtin=gtin)
        for event in events
    ]
    return EpcisDocument(
        context=[EPCIS_CONTEXT, {"grainproof": GRAINPROOF_NAMESPACE}],
        type="EPCISDocument",
        schema_version="2.0",
        creation_date=created,
        epcis_body=EpcisBody(event_list=event_list),
        next_cursor=next_cursor,
        has_more=has_more,
    )
