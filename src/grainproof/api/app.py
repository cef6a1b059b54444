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
from grainproof.api.controllers.reference import ReferenceLotController, ReferenceModelController
from grainproof.api.controllers.system import SystemController
from grainproof.api.controllers.verifications import VerificationController
from grainproof.api.dependencies import provide_caller, provide_runtime, provide_session
from grainproof.api.desk import DESK_ROUTES
from grainproof.api.errors import EXCEPTION_HANDLERS
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
    ReferenceLotController,
    ReferenceModelController,
    EvidenceController,
    KeyController,
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
    return Litestar(
        route_handlers=[*ROUTES, *DESK_ROUTES, *(extra_routes or [])],
        dependencies={
            "runtime": Provide(provide_runtime, sync_to_thread=False),
            "session": Provide(provide_session),
            "caller": Provide(provide_caller, sync_to_thread=False),
        },
        middleware=[metrics_middleware, DefineMiddleware(ApiKeyAuthentication, exclude=OPEN_PATHS)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({"runtime": runtime}),
        request_max_body_size=request_limit,
        openapi_config=OpenAPIConfig(
            title="grainproof",
            version="1",
            description="Verify the declared origin and harvest date of grain lots from smartphone photos.",
            path="/schema",
            components=Components(
                security_schemes={"apiKey": SecurityScheme(type="http", scheme="bearer", description="An API key.")}
            ),
            security=[{"apiKey": []}],
        ),
        debug=False,
    )


def _warm(runtime: Runtime) -> None:
    try:
        runtime.embedder()
    except Exception:  # a broken embedder must not stop the service: photo requests will report it
        logger.exception("could not load the photo embedder at start-up")
