"""Values controllers receive by name (the runtime, a database session, the calling key), and the check of
the request body's media type that runs before every operation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import SerializationException
from litestar.serialization import decode_json
from sqlmodel import Session

from grainproof.api.runtime import Runtime
from grainproof.api.schemas import RequestError, UnsupportedMediaTypeError
from grainproof.store.database import session_scope
from grainproof.store.tables import ApiKey


def provide_runtime(state: State) -> Runtime:
    return state.runtime  # type: ignore[no-any-return]


def provide_session(state: State) -> Iterator[Session]:
    """A read-only-by-convention session for one request (writes go through services' own transactions)."""
    with session_scope(state.runtime.engine) as session:
        yield session


def provide_caller(request: Request[Any, Any, Any]) -> ApiKey:
    return request.user  # type: ignore[no-any-return]


#: Handler option naming the request media types an operation reads (`opt={ACCEPTS: (...)}`).
ACCEPTS = "accepts"


def request_media_type(request: Request[Any, Any, Any]) -> str:
    """The body's media type without parameters, lower case ('' when the request names none)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def reject_unsupported_media_type(request: Request[Any, Any, Any]) -> None:
    """415 before anything is read when the body's Content-Type is not one the operation documents.

    A request that names no type is read as the first documented one (curl and many clients omit it).
    """
    accepted: tuple[str, ...] = request.route_handler.opt.get(ACCEPTS, ())
    media_type = request_media_type(request)
    if accepted and media_type and media_type not in accepted:
        raise UnsupportedMediaTypeError(
            f"Content type {media_type!r} is not accepted here: send {' or '.join(accepted)}."
        )


async def request_json(request: Request[Any, Any, Any]) -> Any:
    """The body's JSON (None when empty); RequestError when it is not JSON.

    msgspec's decoder first (a third of json.loads's time on a lot vector's 1 280 floats), json.loads
    for what it refuses (NaN, out-of-range numbers), so that both accept the same bodies.
    """
    raw = await request.body()
    try:
        try:
            return decode_json(raw or b"null")
        except SerializationException:
            return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError("The request body is not valid JSON.") from None
