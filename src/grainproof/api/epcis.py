"""EPCIS 2.0 JSON-LD export: a verification as an ObjectEvent a traceability system can ingest.

The lot is an LGTIN class (GTIN + lot number) written as a GS1 Digital Link URI; the verdict rides
along as an extension under the grainproof namespace. Nothing is fetched: the @context is a URL
string, as EPCIS 2.0 documents carry it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
GRAINPROOF_NAMESPACE = "https://grainproof.dev/epcis/"


def lgtin_uri(gtin: str, lot_id: str) -> str:
    """The lot as a GS1 Digital Link LGTIN class URI (AI 01 = GTIN, AI 10 = batch/lot)."""
    return f"https://id.gs1.org/01/{gtin}/10/{quote(lot_id, safe='')}"


def _location(value: str | None) -> dict[str, str] | None:
    # EPCIS locations are URIs (an SGLN URN, or a Digital Link with AI 414); free text stays in the extension.
    if value and ":" in value and " " not in value:
        return {"id": value}
    return None


def object_event(verification: dict[str, Any], *, default_gtin: str) -> dict[str, Any]:
    """One EPCIS 2.0 ObjectEvent (OBSERVE, bizStep inspecting) for a verification as the API returns it."""
    claim = verification["claim"]
    created = datetime.fromisoformat(verification["created_at"])
    offset = created.strftime("%z") or "+0000"
    quantity: dict[str, Any] = {"epcClass": lgtin_uri(claim.get("gtin") or default_gtin, claim["lot_id"])}
    if claim.get("quantity_kg"):
        quantity.update({"quantity": claim["quantity_kg"], "uom": "KGM"})
    verdict = verification["verdict"]
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": created.isoformat(timespec="milliseconds"),
        "eventTimeZoneOffset": f"{offset[:3]}:{offset[3:]}",
        "eventID": f"urn:uuid:{verification['id']}",
        "action": "OBSERVE",
        "bizStep": "inspecting",
        "epcList": [],
        "quantityList": [quantity],
        "grainproof:verification": {
            "id": verification["id"],
            "species": claim["species"],
            "variety": claim["variety"],
            "declaredOrigin": claim["origin"],
            "declaredHarvestDate": claim.get("harvest_date"),
            "site": verification.get("site"),
            "photoSha256": verification.get("photos", []),
            "modelVersion": verification["model_version"],
            "verdict": verdict,
            "review": verification["reviews"][-1] if verification.get("reviews") else None,
        },
    }
    location = _location(verification.get("site"))
    if location is not None:
        event["readPoint"] = location
        event["bizLocation"] = location
    return event


def epcis_document(verifications: list[dict[str, Any]], *, default_gtin: str, created: datetime) -> dict[str, Any]:
    """An EPCISDocument holding one ObjectEvent per verification."""
    return {
        "@context": [EPCIS_CONTEXT, {"grainproof": GRAINPROOF_NAMESPACE}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": created.isoformat(timespec="milliseconds"),
        "epcisBody": {"eventList": [object_event(v, default_gtin=default_gtin) for v in verifications]},
    }
