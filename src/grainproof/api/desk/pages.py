"""What the auditor's pages show: the queue, one lot's evidence, and its map of plausible origins.

These functions read through the same services as the API (`list_verifications`, `get_verification`)
and only add what a person needs on a page: region names, reference lots' photos, a shaded map,
times in the auditor's zone, warnings grouped, the alternatives worth reading.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func
from sqlmodel import Session, col, select

from grainproof.api.runtime import Runtime
from grainproof.api.schemas import claim_from_payload
from grainproof.api.services.verifications import (
    QUEUE_ORDERS,
    Caller,
    VerificationFilter,
    blind_sample_ids,
    get_verification,
    iter_verification_summaries,
    list_verifications,
)
from grainproof.domain import FLAGGED_CHECKS
from grainproof.errors import ClaimError, GrainproofError
from grainproof.store.arrays import decode_array
from grainproof.store.tables import (
    REVIEW_DECISIONS,
    ApiKey,
    ReferenceLot,
    ReferenceModelVersion,
    Verification,
)

if TYPE_CHECKING:
    from grainproof.geo import RegionSet
    from grainproof.reference import ReferenceModel

PAGE_SIZE = 25

#: How each decision reads on the page, in the order the form offers them.
DECISION_LABELS: dict[str, str] = {
    "confirmed_fraud": "Confirmed fraud",
    "false_alarm": "False alarm",
    "inconclusive": "Inconclusive",
    "confirmed_genuine": "Confirmed genuine",
}
assert set(DECISION_LABELS) == set(REVIEW_DECISIONS), "every review decision needs a label on the desk"

#: How each sort order reads on the queue page.
ORDER_LABELS: dict[str, str] = {
    "newest": "Received, newest first",
    "oldest": "Received, oldest first",
    "least_plausible": "Plausibility, lowest first",
    "most_plausible": "Plausibility, highest first",
}
assert set(ORDER_LABELS) == set(QUEUE_ORDERS), "every queue order needs a label on the desk"

#: How each check that can flag a lot reads in the queue's filter.
CHECK_LABELS: dict[str, str] = {
    "origin_season": "Origin and season",
    "variety": "Variety",
    "purity": "Purity",
}
assert tuple(CHECK_LABELS) == FLAGGED_CHECKS, "every check that can flag a lot needs a label on the desk"

#: An alternative origin and season is worth a row when the posterior gives it at least this share...
MIN_ALTERNATIVE_POSTERIOR = 0.01
# ...or when its p-value is above the verdict's alpha (declared so, the lot would not have been flagged).
# Rows below both floors (a posterior that rounds to 0 % and a p-value at or below alpha, often the
# smallest value the calibration can give, equal across rows) tell an auditor nothing and are left out.

# One map drawing at a time: matplotlib is thread-safe on separate figures, but two requests for the
# same lot must not write the same file at once, and drawing is CPU-bound anyway.
_MAP_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueQuery:
    """The queue's filters as the page's form sends them (empty text means "any")."""

    status: str = "open"
    #: "flagged": flagged lots, and any lot an auditor reviewed (flagged or not); "all": every lot.
    flagged: str = "flagged"
    site: str = ""
    variety: str = ""
    #: Only lots one check flagged: origin_season, variety or purity (empty: any).
    check: str = ""
    date_from: str = ""
    date_to: str = ""
    sort: str = "newest"
    page: int = 1

    def __post_init__(self) -> None:
        if self.status not in ("open", "reviewed", "all"):
            raise ClaimError(f"Status {self.status!r} is not one of open, reviewed, all.")
        if self.flagged not in ("flagged", "all"):
            raise ClaimError(f"Show {self.flagged!r} is not one of flagged, all.")
        if self.check and self.check not in CHECK_LABELS:
            raise ClaimError(f"Check {self.check!r} is not one of {', '.join(CHECK_LABELS)}.")
        if self.sort not in ORDER_LABELS:
            raise ClaimError(f"Sort {self.sort!r} is not one of {', '.join(ORDER_LABELS)}.")
        if self.page < 1:
            raise ClaimError(f"Page {self.page} must be 1 or more.")
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    raise ClaimError(f"{value!r} is not a date: use YYYY-MM-DD.") from None

    def service_filter(self, zone: tzinfo = UTC) -> VerificationFilter:
        """The API service's filter for this page of the queue; dates are days in the auditor's `zone`."""
        start = datetime.combine(date.fromisoformat(self.date_from), time.min, zone) if self.date_from else None
        # The "to" date is inclusive: everything before the next midnight.
        end = datetime.combine(date.fromisoformat(self.date_to), time.max, zone) if self.date_to else None
        return VerificationFilter(
            flagged=True if self.flagged == "flagged" else None,
            include_reviewed=True,
            include_blind_samples=True,
            order=self.sort,
            status=None if self.status == "all" else self.status,
            site=self.site or None,
            variety=self.variety or None,
            flagged_check=self.check or None,
            created_from=start,
            created_to=end,
            limit=PAGE_SIZE,
            offset=(self.page - 1) * PAGE_SIZE,
        )

    def as_params(self, **changes: Any) -> dict[str, str]:
        """The query string of this view (with `changes`), for pagination links."""
        values = {
            "status": self.status,
            "flagged": self.flagged,
            "site": self.site,
            "variety": self.variety,
            "check": self.check,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "sort": self.sort,
            "page": str(self.page),
        }
        values.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}


class RegionNames:
    """'51' -> '51 Marne' with the region set the verdicts use (plain codes when there is none)."""

    def __init__(self, regions: RegionSet | None) -> None:
        self.regions = regions

    def __call__(self, code: str | None) -> str:
        if not code:
            return "—"
        if self.regions is None:
            return code
        try:
            return f"{self.regions.resolve_code(code)} {self.regions.name_of(code)}"
        except GrainproofError:
            return code


def region_names(runtime: Runtime, region_set: str | None = None) -> RegionNames:
    name = region_set or runtime.settings.region_set
    if not name:
        return RegionNames(None)
    from grainproof.geo import load_region_set

    try:
        return RegionNames(load_region_set(name, settings=runtime.settings))
    except GrainproofError:
        return RegionNames(None)


def queue_page(
    runtime: Runtime, session: Session, query: QueueQuery, *, caller: Caller, zone: tzinfo = UTC
) -> dict[str, Any]:
    """One page of the queue in the chosen order, plus the choices for the filter form."""
    result = list_verifications(session, query.service_filter(zone), caller=caller)
    total = int(result["total"])
    pages = max(1, -(-total // PAGE_SIZE))
    sites = sorted(s for s in session.exec(select(Verification.site).distinct()) if s)
    varieties = sorted(v for v in session.exec(select(Verification.variety).distinct()) if v)
    return {
        "items": result["items"],
        "total": total,
        "page": query.page,
        "pages": pages,
        "query": query,
        "sites": sites,
        "varieties": varieties,
        "orders": ORDER_LABELS,
        "checks": CHECK_LABELS,
        "region_label": region_names(runtime),
    }


#: The columns of the queue's CSV export, in order.
EXPORT_COLUMNS: tuple[str, ...] = (
    "received",
    "lot_id",
    "species",
    "variety",
    "declared_origin",
    "declared_origin_name",
    "plausibility",
    "flagged",
    "site",
    "status",
    "decision",
    "first_reason",
    "verification_id",
    "model_version",
)


def export_rows(
    runtime: Runtime, session: Session, query: QueueQuery, *, caller: Caller, zone: tzinfo = UTC
) -> Iterator[list[str]]:
    """The queue as CSV rows (header first): every lot the page's filters match, in its order, not one page.

    Times carry their UTC offset; text a spreadsheet would run as a formula is defused with a leading quote.
    """
    labels = region_names(runtime)
    yield list(EXPORT_COLUMNS)
    for item in iter_verification_summaries(session, query.service_filter(zone), caller=caller):
        origin = item["declared_origin_unit"]
        received = _as_utc(item["created_at"]).astimezone(zone).isoformat(timespec="seconds")
        values = {
            "received": received,
            "lot_id": item["lot_id"],
            "species": item["species"],
            "variety": item["variety"],
            "declared_origin": origin or "",
            "declared_origin_name": labels(origin) if origin else "",
            "plausibility": repr(float(item["plausibility"])),
            "flagged": "yes" if item["flagged"] else "no",
            "site": item["site"] or "",
            "status": item["status"],
            "decision": item["decision"] or "",
            "first_reason": item["reasons"][0] if item["reasons"] else "",
            "verification_id": item["id"],
            "model_version": item["model_version"],
        }
        yield [_spreadsheet_safe(values[column]) for column in EXPORT_COLUMNS]


def _spreadsheet_safe(text: str) -> str:
    # Lot ids and sites come from intake clients: "=HYPERLINK(...)" must stay text in a spreadsheet.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _as_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


#: The cookie the desk's script sets to the browser's IANA time zone (e.g. Europe/Paris).
ZONE_COOKIE = "grainproof_tz"


def display_zone(browser_zone: str | None, configured: str | None) -> ZoneInfo:
    """The zone the desk shows times in: the browser's (from its cookie), else the configured one, else UTC."""
    for name in (browser_zone, configured):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue  # an unknown or malformed name: try the next one
    return ZoneInfo("UTC")


def local_time(text: str | datetime | None, zone: tzinfo) -> str:
    """A stored moment as the auditor reads it: local date and time with the zone's abbreviation."""
    if not text:
        return "—"
    moment = _as_utc(text) if isinstance(text, str) else (text if text.tzinfo else text.replace(tzinfo=UTC))
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


_PHOTO_PREFIX = re.compile(r"^(?P<photo>[^:]{1,200}): (?P<message>.+)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class WarningGroup:
    """One warning as the page shows it, with the photos it came from when several photos gave it."""

    message: str
    photos: tuple[str, ...] = ()


def group_warnings(warnings: Sequence[str]) -> list[WarningGroup]:
    """Warnings that differ only in the photo they name ("a.jpg: no calibration card ...") become one line
    listing the photos; every other warning is kept as it is, in first-seen order."""
    parsed = [_PHOTO_PREFIX.match(w) for w in warnings]
    photos_by_message: dict[str, list[str]] = {}
    for match in parsed:
        if match:
            photos_by_message.setdefault(match["message"], []).append(match["photo"])
    groups: list[WarningGroup] = []
    shown: set[str] = set()
    for warning, match in zip(warnings, parsed, strict=True):
        photos = photos_by_message.get(match["message"], []) if match else []
        if match and len(photos) > 1:
            if match["message"] not in shown:
                shown.add(match["message"])
                groups.append(WarningGroup(match["message"], tuple(dict.fromkeys(photos))))
        elif warning not in shown:
            shown.add(warning)
            groups.append(WarningGroup(warning))
    return groups


def informative_alternatives(alternatives: Sequence[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """The alternatives worth a row: posterior at least MIN_ALTERNATIVE_POSTERIOR, or p-value above alpha."""
    return [
        alt
        for alt in alternatives
        if float(alt.get("probability") or 0.0) >= MIN_ALTERNATIVE_POSTERIOR or float(alt.get("p_value") or 0.0) > alpha
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLabel:
    """A reference model as people name it: its build number, content version, date and what it holds."""

    name: str
    version: str
    built_at: datetime | None
    lot_count: int | None
    region_set: str | None
    backbone: str | None


def model_label(session: Session, row: ReferenceModelVersion | None, version: str) -> ModelLabel:
    """ "Reference model 3", version, build date: builds are numbered in the order they were requested."""
    if row is None:
        return ModelLabel(
            name="Reference model (not in this database)",
            version=version,
            built_at=None,
            lot_count=None,
            region_set=None,
            backbone=None,
        )
    number = session.exec(
        select(func.count())
        .select_from(ReferenceModelVersion)
        .where(col(ReferenceModelVersion.created_at) <= row.created_at)
    ).one()
    return ModelLabel(
        name=f"Reference model {number}",
        version=row.version or version,
        built_at=row.finished_at or row.created_at,
        lot_count=row.lot_count,
        region_set=row.region_set,
        backbone=row.backbone_id,
    )


def lot_page(runtime: Runtime, session: Session, verification_id: str, *, caller: Caller) -> dict[str, Any]:
    """A verification with its evidence: region names, and each nearest reference lot's record and photos."""
    view = get_verification(session, verification_id, caller=caller)
    model_row = session.get(ReferenceModelVersion, view["reference_model_id"]) if view["reference_model_id"] else None
    labels = region_names(runtime, model_row.region_set if model_row else None)
    nearest = view["verdict"].get("nearest_reference_lots") or []
    rows = {
        r.lot_id: r
        for r in session.exec(select(ReferenceLot).where(col(ReferenceLot.lot_id).in_([n["lot_id"] for n in nearest])))
    }
    references = []
    for item in nearest:
        row = rows.get(item["lot_id"])
        references.append(
            {
                **item,
                "harvest_date": row.harvest_date if row else None,
                "device": row.device if row else None,
                "photos": json.loads(row.photo_hashes_json) if row else [],
                "in_store": row is not None,
            }
        )
    verdict = view["verdict"]
    alternatives = verdict.get("alternatives") or []
    shown_alternatives = informative_alternatives(alternatives, float(verdict["alpha"]))
    return {
        "v": view,
        "reviewers": reviewer_names(session, view["reviews"]),
        # The history reads forwards: decision 1 is the first one recorded.
        "review_numbers": {r["id"]: number for number, r in enumerate(view["reviews"], start=1)},
        "verdict": verdict,
        "claim": view["claim"],
        "references": references,
        "region_label": labels,
        "decisions": DECISION_LABELS,
        "has_map": bool(model_row and model_row.path and model_row.region_set),
        "warnings": group_warnings(verdict.get("warnings") or []),
        "alternatives": shown_alternatives,
        "hidden_alternatives": len(alternatives) - len(shown_alternatives),
        "min_alternative_posterior": MIN_ALTERNATIVE_POSTERIOR,
        "model": model_label(session, model_row, view["model_version"]),
        "blind_sample": bool(blind_sample_ids(session, [view["id"]])),
    }


def reviewer_names(session: Session, reviews: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Review id -> who decided: the auditor's username, or the API key's label for a machine's review."""
    key_ids = [r["reviewer"] for r in reviews if r["reviewer"] is not None and not r.get("reviewer_user")]
    keys = {
        key.id: f"API key {key.name or key.prefix + '…'}"
        for key in session.exec(select(ApiKey).where(col(ApiKey.id).in_(key_ids)))
    }
    return {r["id"]: r.get("reviewer_user") or keys.get(r["reviewer"], f"API key #{r['reviewer']}") for r in reviews}


def region_plausibility(model: ReferenceModel, claim_payload: dict[str, Any], vector: Any) -> dict[str, float]:
    """The plausibility (joint p-value) the lot would get had it declared each reference origin instead.

    The declared season is kept, so the map answers "where, in that season, could this lot come from?".
    """
    from grainproof.scoring.plausibility import score_claim, species_reference

    claim = claim_from_payload(claim_payload)
    reference, _ = species_reference(model, claim.species, claim.variety)
    return {
        origin: score_claim(
            model,
            species=claim.species,
            variety=claim.variety,
            origin_unit=origin,
            season=claim.season,
            vector=vector,
            n_alternatives=0,
            n_nearest=0,
            device=claim_payload.get("device"),
        ).plausibility
        for origin in reference.origins
    }


def map_path(runtime: Runtime, verification_id: str) -> Path:
    return runtime.settings.data_dir / "desk" / "maps" / f"{verification_id}.png"


def lot_map(runtime: Runtime, session: Session, verification_id: str, *, caller: Caller) -> Path:
    """The lot's map (PNG): each region shaded by its plausibility, the declared origin in red; drawn once.

    A verification never changes and names its model, so the drawing is cached for good.
    """
    view = get_verification(session, verification_id, caller=caller)  # also checks the caller may see it
    out = map_path(runtime, verification_id)
    if out.is_file():
        return out
    model_row = session.get(ReferenceModelVersion, view["reference_model_id"]) if view["reference_model_id"] else None
    if model_row is None or not model_row.path or not model_row.region_set:
        raise GrainproofError("This verification's reference model has no region set, so there is no map to draw.")
    row = session.get(Verification, verification_id)
    assert row is not None
    model = runtime.load_model(model_row.path)
    from grainproof.geo import load_region_set
    from grainproof.geo.maps import draw_region_map

    values = region_plausibility(model, view["claim"], decode_array(row.vector))
    regions = load_region_set(model_row.region_set, settings=runtime.settings)
    claim = claim_from_payload(view["claim"])
    season = f", season {claim.season}" if claim.season else ""
    with _MAP_LOCK:
        if not out.is_file():
            drawn = draw_region_map(
                regions,
                values,
                declared=claim.origin,
                out=out.with_name(f".{out.stem}.drawn.png"),
                title=f"Lot {claim.lot_id}: plausibility of each origin{season}",
            )
            _trim_margins(drawn, out)
            drawn.unlink()
    return out


def _trim_margins(source: Path, out: Path, pad: int = 12) -> None:
    """Crop the white border around a drawn map (a page column is narrow), writing `out` atomically."""
    from PIL import Image, ImageChops

    with Image.open(source) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box is not None:
        left, top, right, bottom = box
        width, height = rgb.size
        box = (max(0, left - pad), max(0, top - pad), min(width, right + pad), min(height, bottom + pad))
        rgb = rgb.crop(box)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    rgb.save(tmp, format="PNG", optimize=True)
    tmp.replace(out)
