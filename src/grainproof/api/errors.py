"""Errors as JSON: `{"error": <kind>, "detail": <sentence>}` with the right status; never a stack trace."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from grainproof.errors import GrainproofError, ManifestError
from grainproof.services.verification import error_kind

logger = logging.getLogger("grainproof.api")


def grainproof_error(_: Request[Any, Any, Any], exc: GrainproofError) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"error": error_kind(exc), "detail": str(exc)}
    if isinstance(exc, ManifestError):
        body["problems"] = exc.problems
    return Response(body, status_code=exc.status_code, media_type=MediaType.JSON)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"error": error_kind(exc), "detail": exc.detail}
    if isinstance(exc, RequestEntityTooLarge):
        settings = request.app.state.runtime.settings
        body["detail"] = (
            f"The request body is too large: send at most {settings.max_photos_per_lot} photos "
            f"of at most {settings.max_upload_bytes:,} bytes each."
        )
    if isinstance(exc, ValidationException):
        body["error"] = "validation"
    if exc.extra:
        body["problems"] = exc.extra
    return Response(body, status_code=exc.status_code, media_type=MediaType.JSON, headers=exc.headers)


def unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    incident = uuid.uuid4().hex[:12]
    logger.exception("unexpected error (incident %s)", incident, exc_info=exc)
    return Response(
        {
            "error": "internal",
            "detail": f"Something went wrong on our side (incident {incident}); it was logged. Try again later.",
        },
        status_code=500,
        media_type=MediaType.JSON,
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    GrainproofError: grainproof_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
