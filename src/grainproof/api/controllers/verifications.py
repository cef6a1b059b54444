"""/v1/verifications: submit a claim (photos or vectors), read the queue, record reviews, export EPCIS."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import SerializationException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.serialization import decode_json
from sqlmodel import Session

from grainproof.api.auth import requires_role
from grainproof.api.epcis import epcis_document
from grainproof.api.runtime import Runtime
from grainproof.api.schemas import (
    MAX_OFFSET,
    VERIFICATION_JSON_SCHEMA,
    VERIFICATION_MULTIPART_SCHEMA,
    RequestError,
    parse_claim,
    parse_unit_vectors,
    parse_vector,
)
from grainproof.api.services.verifications import (
    UploadedPhoto,
    VerificationFilter,
    VerificationRequest,
    get_verification,
    list_verifications,
    record_review,
    submit_verification,
)
from grainproof.store.tables import REVIEW_DECISIONS, ApiKey, utc_now

_MAX_IDEMPOTENCY_KEY = 200


def _schema(data: dict[str, Any]) -> Schema:
    """A litestar OpenAPI Schema from a plain JSON-schema dict (camelCase keys become snake_case)."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        if key == "properties":
            value = {prop: _schema(sub) for prop, sub in value.items()}
        elif key == "items":
            value = _schema(value)
        elif key == "type":
            value = OpenAPIType(value)
        kwargs[name] = value
    return Schema(**kwargs)


@dataclass
class _VerificationOperation(Operation):
    """Documents the two request forms (the handler parses the body itself to accept both)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="A claim with precomputed vectors (JSON), or the claim as a JSON part plus photos.",
            content={
                "application/json": OpenAPIMediaType(schema=_schema(VERIFICATION_JSON_SCHEMA)),
                "multipart/form-data": OpenAPIMediaType(schema=_schema(VERIFICATION_MULTIPART_SCHEMA)),
            },
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewInput:
    """An auditor's decision on a verification."""

    decision: str
    note: str = ""
    promote_to_reference: bool = False


async def _parse_verification(request: Request[Any, Any, Any], max_photos: int) -> VerificationRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        claim_part = form.get("claim")
        if isinstance(claim_part, UploadFile):
            claim_part = (await claim_part.read()).decode("utf-8", errors="replace")
        if not isinstance(claim_part, str) or not claim_part.strip():
            raise RequestError("The multipart form needs a `claim` part holding the claim as JSON.")
        try:
            claim_data = json.loads(claim_part)
        except json.JSONDecodeError as exc:
            raise RequestError(f"The `claim` part is not valid JSON ({exc.msg} at position {exc.pos}).") from None
        files = [f for f in form.getall("photos") if isinstance(f, UploadFile)] if "photos" in form else []
        if not files:
            raise RequestError("The multipart form has no `photos` files; attach at least one photo of the sample.")
        if len(files) > max_photos:
            raise RequestError(f"{len(files)} photos sent; at most {max_photos} per lot are accepted.")
        photos = tuple([UploadedPhoto(name=f.filename or "photo", data=await f.read()) for f in files])
        alpha = _alpha(form.get("alpha"))
        return VerificationRequest(claim=parse_claim(claim_data), photos=photos, alpha=alpha)
    if content_type not in ("application/json", ""):
        raise RequestError(
            f"Content type {content_type!r} is not accepted: send application/json or multipart/form-data."
        )
    try:
        data = _json_body(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object with `claim` and `vectors`.")
    unknown = sorted(set(data) - {"claim", "vectors", "unit_vectors", "backbone_id", "alpha"})
    if unknown:
        raise RequestError(
            f"Unknown field(s) {', '.join(unknown)}: expected claim, vectors, unit_vectors, backbone_id, alpha."
        )
    parsed = parse_claim(data.get("claim"))
    if "vectors" not in data:
        raise RequestError("`vectors` is missing: send the lot vector, or photos as multipart/form-data.")
    vector = parse_vector(data["vectors"], "vectors")
    units = parse_unit_vectors(data.get("unit_vectors"), int(vector.shape[0]))
    backbone = data.get("backbone_id")
    if backbone is not None and not isinstance(backbone, str):
        raise RequestError("backbone_id must be a string.")
    return VerificationRequest(
        claim=parsed, lot_vector=vector, unit_vectors=units, backbone_id=backbone, alpha=_alpha(data.get("alpha"))
    )


def _json_body(raw: bytes) -> Any:
    """The body's JSON: msgspec's decoder (a third of json.loads's time on a lot vector's 1 280 floats);
    json.loads for what it refuses (NaN, out-of-range numbers), so both accept the same bodies."""
    try:
        return decode_json(raw)
    except SerializationException:
        return json.loads(raw)


def _alpha(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"alpha {value!r} is not a number.") from None
    if not 0.0 < alpha < 1.0:
        raise RequestError(f"alpha {alpha} must lie strictly between 0 and 1.")
    return alpha


class VerificationController(Controller):
    path = "/v1/verifications"
    tags = ("verifications",)

    @post(
        "/",
        summary="Verify a lot's declared origin and harvest date",
        guards=[requires_role("intake", "admin")],
        operation_class=_VerificationOperation,
        status_code=201,
    )
    async def create(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], caller: NamedDependency[ApiKey]
    ) -> Response[Any]:
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= _MAX_IDEMPOTENCY_KEY:
            raise RequestError(f"Idempotency-Key must have 1 to {_MAX_IDEMPOTENCY_KEY} characters.")
        parsed = await _parse_verification(request, runtime.settings.max_photos_per_lot)
        result = await anyio.to_thread.run_sync(
            lambda: submit_verification(runtime, parsed, caller=caller, idempotency_key=idempotency_key)
        )
        headers = {"Location": f"/v1/verifications/{result.body['id']}"}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(result.body, status_code=200 if result.replayed else 201, headers=headers)

    @get("/", summary="The verification queue, newest first", sync_to_thread=True)
    def index(
        self,
        session: NamedDependency[Session],
        caller: NamedDependency[ApiKey],
        flagged: FromQuery[bool | None] = None,
        status: Annotated[str | None, QueryParameter(description="open (no review yet) or reviewed")] = None,
        site: FromQuery[str | None] = None,
        species: FromQuery[str | None] = None,
        variety: FromQuery[str | None] = None,
        lot_id: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        query = VerificationFilter(
            flagged=flagged,
            status=status,
            site=site,
            species=species,
            variety=variety,
            lot_id=lot_id,
            limit=limit,
            offset=offset,
        )
        return list_verifications(session, query, caller=caller)

    @get(
        "/{verification_id:str}", summary="One verification with its verdict, evidence and reviews", sync_to_thread=True
    )
    def detail(
        self, session: NamedDependency[Session], caller: NamedDependency[ApiKey], verification_id: FromPath[str]
    ) -> dict[str, Any]:
        return get_verification(session, verification_id, caller=caller)

    @get(
        "/{verification_id:str}/epcis",
        summary="The verification as an EPCIS 2.0 ObjectEvent",
        sync_to_thread=True,
        media_type="application/ld+json",
    )
    def epcis(
        self,
        session: NamedDependency[Session],
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        verification_id: FromPath[str],
    ) -> dict[str, Any]:
        view = get_verification(session, verification_id, caller=caller)
        return epcis_document([view], default_gtin=runtime.settings.gs1_gtin, created=utc_now())

    @post(
        "/{verification_id:str}/reviews",
        summary=f"Record an auditor's decision ({', '.join(REVIEW_DECISIONS)})",
        guards=[requires_role("auditor", "admin")],
        sync_to_thread=True,
        status_code=201,
    )
    def review(
        self,
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        verification_id: FromPath[str],
        data: JSONBody[ReviewInput],
    ) -> dict[str, Any]:
        return record_review(
            runtime,
            verification_id,
            decision=data.decision,
            note=data.note,
            promote_to_reference=data.promote_to_reference,
            caller=caller,
        )
