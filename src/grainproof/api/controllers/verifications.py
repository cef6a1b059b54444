"""/v1/verifications: submit a claim (photos or vectors), read the queue, record reviews, export EPCIS."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader, UploadFile
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, HeaderParameter, PathParameter, QueryParameter
from sqlmodel import Session

from grainproof.api.auth import requires_role
from grainproof.api.contract import (
    FlaggedCheck,
    QueueOrder,
    Review,
    ReviewInput,
    Verification,
    VerificationPage,
    VerificationStatus,
    shaped,
)
from grainproof.api.dependencies import ACCEPTS, request_json, request_media_type
from grainproof.api.epcis import EPCIS_MEDIA_TYPE, EpcisDocument, epcis_document
from grainproof.api.openapi import VerificationOperation, problems
from grainproof.api.runtime import Runtime
from grainproof.api.schemas import MAX_OFFSET, RequestError, parse_claim, parse_unit_vectors, parse_vector
from grainproof.api.services.verifications import (
    MAX_PAGE,
    EventFilter,
    UploadedPhoto,
    VerificationFilter,
    VerificationRequest,
    get_verification,
    list_verifications,
    record_review,
    submit_verification,
    trace_events,
)
from grainproof.store.tables import ApiKey, utc_now

_MAX_IDEMPOTENCY_KEY = 200

VerificationId = Annotated[str, PathParameter(description="The verification's id (a UUID).", max_length=36)]
Flagged = Annotated[bool | None, QueryParameter(description="Only flagged (true) or only accepted (false) lots.")]
Site = Annotated[str | None, QueryParameter(description="Only lots received at this intake site.", max_length=200)]
Since = Annotated[
    datetime | None,
    QueryParameter(
        description="Only what happened at or after this moment (RFC 3339, with its UTC offset).",
        examples=[Example(value="2026-12-01T00:00:00Z")],
    ),
]
Until = Annotated[
    datetime | None, QueryParameter(description="Only what happened at or before this moment (RFC 3339).")
]
Cursor = Annotated[
    str | None,
    QueryParameter(description="Where the page starts: the previous page's `next_cursor`.", max_length=40),
]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description=f"At most this many items (1 to {MAX_PAGE}).")]


async def _parse_verification(request: Request[Any, Any, Any], max_photos: int) -> VerificationRequest:
    if request_media_type(request) == "multipart/form-data":
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
    data = await request_json(request)
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
        operation_id="create_verification",
        summary="Verify a lot's declared origin and harvest date",
        description="Scores the claim on the active reference model and stores the verdict with an audit entry. "
        "Send the photos (multipart) or a lot vector computed with the model's backbone (JSON). With an "
        "`Idempotency-Key`, a retry of the same request returns the first answer (200, "
        "`Idempotent-Replayed: true`); the same key with another body is 409.",
        guards=[requires_role("intake", "admin")],
        operation_class=VerificationOperation,
        status_code=201,
        response_headers=[
            # documentation_only: the handler sets it; `value` gives the description its schema (a string).
            ResponseHeader(
                name="Location",
                value="/v1/verifications/{id}",
                description="The verification's path.",
                documentation_only=True,
            )
        ],
        responses={
            200: ResponseSpec(
                data_container=Verification,
                description="A retry with an Idempotency-Key already used for this body: the first answer again, "
                "with `Idempotent-Replayed: true`.",
                generate_examples=False,
            ),
            **problems(400, 403, 409, 413, 415, 422),
        },
        opt={ACCEPTS: ("application/json", "multipart/form-data")},
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                min_length=1,
                max_length=_MAX_IDEMPOTENCY_KEY,
                description="Makes retries safe: the same key and body give the same verification.",
            ),
        ] = None,
    ) -> Response[Verification]:
        """Verify one lot and return the stored verification with its verdict."""
        parsed = await _parse_verification(request, runtime.settings.max_photos_per_lot)
        result = await anyio.to_thread.run_sync(
            lambda: submit_verification(runtime, parsed, caller=caller, idempotency_key=idempotency_key)
        )
        headers = {"Location": f"/v1/verifications/{result.body['id']}"}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(shaped(result.body, Verification), status_code=200 if result.replayed else 201, headers=headers)

    @get(
        "/",
        operation_id="list_verifications",
        summary="The verification queue, newest first; or everything stored since a cursor, oldest first",
        description="Filters combine. Pages follow the order verifications were stored: pass `next_cursor` back "
        "as `cursor`. With `order=oldest` a client syncs incrementally: keep the last `next_cursor` and ask "
        "again later; nothing is skipped or repeated, even while verifications are being added.",
        sync_to_thread=True,
        responses=problems(400),
    )
    def index(
        self,
        session: NamedDependency[Session],
        caller: NamedDependency[ApiKey],
        flagged: Flagged = None,
        status: Annotated[
            VerificationStatus | None, QueryParameter(description="`open` (no review yet) or `reviewed`.")
        ] = None,
        site: Site = None,
        species: Annotated[str | None, QueryParameter(description="Only this species.", max_length=200)] = None,
        variety: Annotated[str | None, QueryParameter(description="Only this variety.", max_length=200)] = None,
        lot_id: Annotated[str | None, QueryParameter(description="Only this lot id.", max_length=200)] = None,
        flagged_check: Annotated[
            FlaggedCheck | None,
            QueryParameter(description="Only lots this check flagged: `origin_season`, `variety` or `purity`."),
        ] = None,
        since: Annotated[
            datetime | None,
            QueryParameter(
                description="Only verifications received at or after this moment (RFC 3339).",
                examples=[Example(value="2026-12-01T00:00:00Z")],
            ),
        ] = None,
        until: Annotated[
            datetime | None, QueryParameter(description="Only verifications received at or before this moment.")
        ] = None,
        order: Annotated[
            QueueOrder, QueryParameter(description="`newest` first (the queue), or `oldest` first (for syncing).")
        ] = QueueOrder.NEWEST,
        cursor: Cursor = None,
        blind_samples: Annotated[
            bool,
            QueryParameter(
                description="With `flagged=true`, also list the unflagged lots drawn for a blind audit (auditors "
                "and admins; each is marked `blind_sample`)."
            ),
        ] = False,
        limit: Limit = 50,
        offset: Annotated[
            int,
            QueryParameter(
                ge=0, le=MAX_OFFSET, description="Skip this many first (prefer `cursor`: offsets shift as lots arrive)."
            ),
        ] = 0,
    ) -> VerificationPage:
        """A page of verifications (intake keys see their own)."""
        query = VerificationFilter(
            flagged=flagged,
            status=status.value if status else None,
            site=site,
            species=species,
            variety=variety,
            lot_id=lot_id,
            flagged_check=flagged_check.value if flagged_check else None,
            created_from=since,
            created_to=until,
            order=order.value,
            cursor=cursor,
            limit=limit,
            offset=offset,
            include_blind_samples=blind_samples,
        )
        return shaped(list_verifications(session, query, caller=caller), VerificationPage)

    @get(
        "/{verification_id:str}",
        operation_id="get_verification",
        summary="One verification with its verdict, evidence and reviews",
        sync_to_thread=True,
        responses=problems(400, 404),
    )
    def detail(
        self, session: NamedDependency[Session], caller: NamedDependency[ApiKey], verification_id: VerificationId
    ) -> Verification:
        """The claim, the photos' hashes, the verdict (alternatives, nearest reference lots, reasons) and reviews."""
        return shaped(get_verification(session, verification_id, caller=caller), Verification)

    @get(
        "/{verification_id:str}/epcis",
        operation_id="get_verification_epcis",
        summary="The verification and its reviews as EPCIS 2.0 ObjectEvents",
        description="An EPCISDocument (JSON-LD): the inspection with `disposition` from the verdict, then one "
        "event per review with the auditor's disposition. Needs GRAINPROOF_GS1_GTIN unless the claim has a "
        "`gtin` (409 otherwise).",
        sync_to_thread=True,
        media_type=EPCIS_MEDIA_TYPE,
        responses=problems(400, 404, 409),
    )
    def epcis(
        self,
        session: NamedDependency[Session],
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        verification_id: VerificationId,
    ) -> EpcisDocument:
        """One verification as an EPCIS document."""
        get_verification(session, verification_id, caller=caller)  # 404 for what the caller cannot see
        page = trace_events(session, EventFilter(verification_id=verification_id, limit=MAX_PAGE), caller=caller)
        return epcis_document(page.events, settings=runtime.settings, created=utc_now())

    @post(
        "/{verification_id:str}/reviews",
        operation_id="create_review",
        summary="Record an auditor's decision",
        description="Appends a review (the verification itself never changes) and its audit entry; a lot "
        "confirmed genuine may be promoted into the reference lots in the same transaction.",
        guards=[requires_role("auditor", "admin")],
        sync_to_thread=True,
        status_code=201,
        responses=problems(400, 403, 404, 409, 413, 415, 422),
        opt={ACCEPTS: ("application/json",)},
    )
    def review(
        self,
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        verification_id: VerificationId,
        data: Annotated[
            ReviewInput,
            Body(
                examples=[
                    Example(
                        summary="A confirmed fraud",
                        value={"decision": "confirmed_fraud", "note": "Seller admitted mixing lots."},
                    )
                ]
            ),
        ],
    ) -> Review:
        """Record a decision on a verification."""
        view = record_review(
            runtime,
            verification_id,
            decision=data.decision.value,
            note=data.note,
            promote_to_reference=data.promote_to_reference,
            caller=caller,
        )
        return shaped(view, Review)


class EpcisController(Controller):
    path = "/v1/epcis"
    tags = ("verifications",)

    @get(
        "/events",
        operation_id="list_epcis_events",
        summary="Verifications and reviews as EPCIS 2.0 events, in the order they were stored",
        description="For traceability systems that sync: pass the document's `grainproof:nextCursor` back as "
        "`cursor` to get what was stored since, nothing skipped or repeated. Needs GRAINPROOF_GS1_GTIN unless "
        "every claim has a `gtin` (409 otherwise).",
        sync_to_thread=True,
        media_type=EPCIS_MEDIA_TYPE,
        responses=problems(400, 409),
    )
    def events(
        self,
        session: NamedDependency[Session],
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        flagged: Flagged = None,
        site: Site = None,
        since: Since = None,
        until: Until = None,
        cursor: Cursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="At most this many events.")] = 100,
    ) -> EpcisDocument:
        """A page of events as an EPCIS document (intake keys see their own lots)."""
        query = EventFilter(flagged=flagged, site=site, since=since, until=until, cursor=cursor, limit=limit)
        page = trace_events(session, query, caller=caller)
        return epcis_document(
            page.events,
            settings=runtime.settings,
            created=utc_now(),
            next_cursor=page.next_cursor,
            has_more=page.has_more,
        )
