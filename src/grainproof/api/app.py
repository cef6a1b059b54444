"""The litestar application: routes, auth, error handling, OpenAPI, metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from grainproof.api.auth import OPEN_PATHS, ApiKeyAuthentication
from grainproof.api.controllers.evidence import EvidenceController
from grainproof.api.controllers.keys import KeyController
from grainproof.api.controllers.monitor import MonitorController
from grainproof.api.controllers.reference import ReferenceLotController, ReferenceModelController
from grainproof.api.controllers.system import SystemController
from grainproof.api.controllers.verifications import EpcisController, VerificationController
from grainproof.api.dependencies import (
    provide_caller,
    provide_runtime,
    provide_session,
    reject_unsupported_media_type,
)
from grainproof.api.desk import DESK_ROUTES
from grainproof.api.errors import EXCEPTION_HANDLERS, problem_details
from grainproof.api.metrics import metrics_middleware
from grainproof.api.runtime import Runtime
from grainproof.api.services.references import fail_interrupted_builds
from grainproof.settings import Settings, get_settings
from grainproof.store.database import require_current_schema, upgrade

logger = logging.getLogger("grainproof.api")

#: Route handlers of the API; the auditor's desk pages add theirs through `create_app(extra_routes=...)`.
ROUTES: list[Any] = [
    SystemController,
    VerificationController,
    EpcisController,
    ReferenceLotController,
    ReferenceModelController,
    EvidenceController,
    KeyController,
    MonitorController,
]


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    migrate: bool = True,
    warm_embedder: bool = False,
    extra_routes: list[Any] | None = None,
) -> Litestar:
    """The service app. `migrate` upgrades the database at start-up (else it must already be current);
    `warm_embedder` loads the photo embedder in the background at start-up, so the first intake
    with photos does not wait for torch and the weights."""
    settings = settings or get_settings()
    runtime = runtime or Runtime.open(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if migrate:
            upgrade(runtime.engine)
        else:
            require_current_schema(runtime.engine)
        interrupted = fail_interrupted_builds(runtime)
        if interrupted:
            logger.warning("%d model build(s) were interrupted by the last shutdown and marked failed", interrupted)
        if warm_embedder:
            threading.Thread(target=_warm, args=(runtime,), name="grainproof-warm-embedder", daemon=True).start()
        try:
            yield
        finally:
            runtime.close()

    request_limit = settings.max_upload_bytes * settings.max_photos_per_lot + 1024 * 1024
    app = Litestar(
        route_handlers=[*ROUTES, *DESK_ROUTES, *(extra_routes or [])],
        dependencies={
            "runtime": Provide(provide_runtime, sync_to_thread=False),
            "session": Provide(provide_session),
            "caller": Provide(provide_caller, sync_to_thread=False),
        },
        middleware=[DefineMiddleware(ApiKeyAuthentication, exclude=OPEN_PATHS)],
        plugins=[problem_details()],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=reject_unsupported_media_type,
        lifespan=[lifespan],
        state=State({"runtime": runtime}),
        request_max_body_size=request_limit,
        openapi_config=OpenAPIConfig(
            title="grainproof",
            version="1",
            description="Verify the declared origin and harvest date of grain lots from smartphone photos. "
            "Every operation but the probes and this description needs `Authorization: Bearer <key>`; "
            "errors are RFC 9457 Problem Details (application/problem+json).",
            path="/schema",
            components=Components(
                security_schemes={"apiKey": SecurityScheme(type="http", scheme="bearer", description="An API key.")}
            ),
            security=[{"apiKey": []}],
            use_handler_docstrings=True,
        ),
        debug=False,
    )
    # Around the whole application, not per route: requests for unknown paths (404) and requests the
    # authentication middleware refuses (401) are only answered out there, and must be counted too.
    app.asgi_handler = metrics_middleware(app.asgi_handler)
    return app


def _warm(runtime: Runtime) -> None:
    try:
        runtime.embedder()
    except Exception:  # a broken embedder must not stop the service: photo requests will report it
        logger.exception("could not load the photo embedder at start-up")
