"""Probes and metrics: /health (the process answers), /ready (database migrated), /metrics."""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from sqlalchemy import func
from sqlmodel import select

from grainproof.api.runtime import Runtime
from grainproof.errors import GrainproofError
from grainproof.store.database import require_current_schema, session_scope
from grainproof.store.tables import ReferenceLot, ReferenceModelVersion


class SystemController(Controller):
    tags = ("system",)

    @get("/health", summary="Liveness: the process answers", exclude_from_auth=True)
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: database reachable and migrated", exclude_from_auth=True, sync_to_thread=True)
    def ready(self, runtime: NamedDependency[Runtime]) -> Response[dict[str, Any]]:
        try:
            require_current_schema(runtime.engine)
        except GrainproofError as exc:
            return Response({"status": "not ready", "detail": str(exc)}, status_code=503)
        with session_scope(runtime.engine) as session:
            active = session.exec(
                select(ReferenceModelVersion.version).where(ReferenceModelVersion.is_active == True)  # noqa: E712
            ).first()
        return Response({"status": "ready", "active_model_version": active})

    @get("/metrics", summary="Prometheus metrics", media_type=MediaType.TEXT, sync_to_thread=True)
    def metrics(self, runtime: NamedDependency[Runtime]) -> str:
        with session_scope(runtime.engine) as session:
            lots = session.exec(select(func.count()).select_from(ReferenceLot)).one()
        return runtime.metrics.render({"grainproof_reference_lots": float(lots)})
