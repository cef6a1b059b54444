"""Errors as RFC 9457 Problem Details (`application/problem+json`), through litestar's problem-details plugin.

Every error answers `{type, title, status, detail, instance}` and, when a request had several problems,
an `errors` list naming the member or parameter of each. `type` is a URI per kind of problem
(`https://grainproof.dev/problems/claim`); `detail` is a sentence saying what to do. Never a stack trace.
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

from grainproof.api.contract import ProblemItem
from grainproof.errors import GrainproofError, ManifestError, class_kind, error_kind

logger = logging.getLogger("grainproof.api")

PROBLEM_TYPE_BASE = "https://grainproof.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

#: Titles of the kinds litestar raises itself (ours take their class docstring's first line).
_TITLES: dict[str, str] = {
    "validation": "A parameter or the request body does not match the API description.",
    "not_authorized": "The API key is missing, unknown or revoked.",
    "permission_denied": "The API key's role does not allow this.",
    "not_found": "No such resource.",
    "method_not_allowed": "This method is not allowed on this path.",
    "request_entity_too_large": "The request body is larger than the service accepts.",
    "internal": "Something went wrong on the service's side.",
}


#: Kinds of litestar's own errors (their class names would give `not_authorized` but also `http`).
_HTTP_KINDS: dict[type[HTTPException], str] = {
    NotAuthorizedException: "not_authorized",
    PermissionDeniedException: "permission_denied",
    NotFoundException: "not_found",
    MethodNotAllowedException: "method_not_allowed",
    RequestEntityTooLarge: "request_entity_too_large",
}


def problem_type(kind: str) -> str:
    """The `type` URI of a kind of problem."""
    return PROBLEM_TYPE_BASE + kind


def _title(kind: str, exc: BaseException, status: int) -> str:
    """The same for every problem of a kind: the first line of the docstring of the class named after it."""
    if kind in _TITLES:
        return _TITLES[kind]
    named = [cls for cls in type(exc).__mro__ if "kind" not in vars(cls) and class_kind(cls) == kind]
    doc = (named[0].__doc__ if named else None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else HTTPStatus(status).phrase


def _problem(
    exc: BaseException, *, kind: str, status: int, detail: str, errors: list[ProblemItem] | None = None, **extra: Any
) -> ProblemDetailsException:
    body: dict[str, Any] = {key: value for key, value in extra.items() if value is not None}
    if errors:
        body["errors"] = [
            {k: v for k, v in (("detail", e.detail), ("pointer", e.pointer), ("parameter", e.parameter)) if v}
            for e in errors
        ]
    return ProblemDetailsException(
        detail=detail,
        status_code=status,
        type_=problem_type(kind),
        title=_title(kind, exc, status),
        extra=body or None,
        headers=getattr(exc, "headers", None),
    )


def from_grainproof_error(exc: GrainproofError) -> ProblemDetailsException:
    """A user-correctable error of ours: its status, its kind, and every problem it lists."""
    errors: list[ProblemItem] | None = None
    problems = getattr(exc, "problems", None)
    if isinstance(exc, ManifestError):
        errors = [ProblemItem(detail=p) for p in exc.problems]
    elif problems:
        errors = [ProblemItem(detail=p.text, pointer=p.pointer) for p in problems]
    elif hasattr(exc, "parameter"):
        errors = [ProblemItem(detail=str(exc), parameter=exc.parameter)]
    return _problem(exc, kind=error_kind(exc), status=exc.status_code, detail=str(exc), errors=errors)


def _validation_items(exc: ValidationException, request: Request[Any, Any, Any] | None) -> list[ProblemItem]:
    items = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message, key, source = str(item.get("message", "")), item.get("key"), item.get("source")
        if source == "body" or source is None:
            pointer = "#/" + str(key).replace(".", "/") if key else None
            items.append(ProblemItem(detail=f"{key}: {message}" if key else message, pointer=pointer))
            continue
        sent = request.query_params.get(str(key)) if request is not None and source == "query" else None
        name = f"{key}={sent!r}" if sent is not None else str(key)
        items.append(ProblemItem(detail=f"{name}: {message}" if key else message, parameter=str(key) if key else None))
    return items


def from_http_exception(exc: HTTPException, request: Request[Any, Any, Any] | None = None) -> ProblemDetailsException:
    """litestar's own errors (authentication, routing, parameter and body validation) as Problem Details."""
    if isinstance(exc, ValidationException):
        items = _validation_items(exc, request)
        detail = "The request does not match the API description: " + (
            "; ".join(i.detail for i in items) if items else str(exc.detail)
        )
        return _problem(exc, kind="validation", status=400, detail=detail.rstrip(".") + ".", errors=items)
    kind = _HTTP_KINDS.get(type(exc)) or error_kind(exc)
    detail = str(exc.detail)
    if isinstance(exc, NotFoundException) and detail == "Not Found":
        detail = "No such path: see /schema for the API's paths."
    return _problem(exc, kind=kind, status=exc.status_code, detail=detail)


def _respond(request: Request[Any, Any, Any], exc: ProblemDetailsException) -> Response[Any]:
    """The Problem Details response, with the request's path as `instance` and our limits in 413s."""
    if exc.instance is None:
        exc.instance = request.url.path
    if exc.type_ == problem_type("request_entity_too_large"):
        settings = request.app.state.runtime.settings
        exc.detail = (
            f"The request body is too large: send at most {settings.max_photos_per_lot} photos "
            f"of at most {settings.max_upload_bytes:,} bytes each."
        )
    return exc.to_response(request)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: logged with an incident id the client can quote, answered without internals."""
    incident = uuid.uuid4().hex[:12]
    logger.exception("unexpected error (incident %s)", incident, exc_info=exc)
    problem = _problem(
        exc,
        kind="internal",
        status=500,
        detail=f"Something went wrong on our side (incident {incident}); it was logged. Try again later.",
        incident=incident,
    )
    return _respond(request, problem)


def problem_details() -> ProblemDetailsPlugin:
    """litestar's problem-details plugin: a ProblemDetailsException becomes its response (with `instance`)."""
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_handler=_respond))


def _grainproof_error(request: Request[Any, Any, Any], exc: GrainproofError) -> Response[Any]:
    return _respond(request, from_grainproof_error(exc))


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _respond(request, from_http_exception(exc, request))


#: Our errors and litestar's own become Problem Details; anything else is a bug: a 500 with an incident id.
#: (Handlers, not the plugin's conversion map: the map's functions see no request, so no `instance`.)
EXCEPTION_HANDLERS: dict[Any, Any] = {
    GrainproofError: _grainproof_error,
    HTTPException: _http_exception,
    Exception: unexpected_error,
}
