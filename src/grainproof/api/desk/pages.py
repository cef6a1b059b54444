"""What the auditor's pages show: the queue, one lot's evidence, and its map of plausible origins.

These functions read through the same services as the API (`list_verifications`, `get_verification`)
and only add what a person needs on a page: region names, reference lots' photos, a shaded map.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from grainproof.api.runtime import Runtime
from grainproof.api.schemas import claim_from_payload
from grainproof.api.services.verifications import VerificationFilter, get_verification, list_verifications
from grainproof.errors import ClaimError, GrainproofError
from grainproof.store.arrays import decode_array
from grainproof.store.tables import REVIEW_DECISIONS, ApiKey, ReferenceLot, ReferenceModelVersion, Verification

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

# One map drawing at a time: matplotlib is thread-safe on separate figures, but two requests for the
# same lot must not write the same file at once, and drawing is CPU-bound anyway.
_MAP_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueQuery:
    """The queue's filters as the page's form sends them (empty text means "any")."""

    status: str = "open"
    flagged: str = "flagged"
    site: str = ""
    variety: str = ""
    date_from: str = ""
    date_to: str = ""
    page: int = 1

    def __post_init__(self) -> None:
        if self.status not in ("open", "reviewed", "all"):
            raise ClaimError(f"Status {self.status!r} is not one of open, reviewed, all.")
        if self.flagged not in ("flagged", "all"):
            raise ClaimError(f"Show {self.flagged!r} is not one of flagged, all.")
        if self.page < 1:
            raise ClaimError(f"Page {self.page} must be 1 or more.")
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    raise ClaimError(f"{value!r} is not a date: use YYYY-MM-DD.") from None

    def service_filter(self) -> VerificationFilter:
        """The API service's filter for this page of the queue."""
        start = datetime.combine(date.fromisoformat(self.date_from), time.min, UTC) if self.date_from else None
        # The "to" date is inclusive: everything before the next midnight.
        end = datetime.combine(date.fromisoformat(self.date_to), time.max, UTC) if self.date_to else None
        return VerificationFilter(
            flagged=True if self.flagged == "flagged" else None,
            status=None if self.status == "all" else self.status,
            site=self.site or None,
            variety=self.variety or None,
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
            "date_from": self.date_from,
            "date_to": self.date_to,
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


def queue_page(runtime: Runtime, session: Session, query: QueueQuery, *, caller: ApiKey) -> dict[str, Any]:
    """One page of the queue, newest first, plus the choices for the filter form."""
    result = list_verifications(session, query.service_filter(), caller=caller)
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
        "region_label": region_names(runtime),
    }


def lot_page(runtime: Runtime, session: Session, verification_id: str, *, caller: ApiKey) -> dict[str, Any]:
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
    reviewer_ids = [r["reviewer"] for r in view["reviews"] if r["reviewer"] is not None]
    reviewers = {
        key.id: key.name or f"key {key.prefix}…"
        for key in session.exec(select(ApiKey).where(col(ApiKey.id).in_(reviewer_ids)))
    }
    return {
        "v": view,
        "reviewers": reviewers,
        "verdict": view["verdict"],
        "claim": view["claim"],
        "references": references,
        "region_label": labels,
        "decisions": DECISION_LABELS,
        "has_map": bool(model_row and model_row.path and model_row.region_set),
    }


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


def lot_map(runtime: Runtime, session: Session, verification_id: str, *, caller: ApiKey) -> Path:
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
