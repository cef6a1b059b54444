"""Probes and metrics: /health (the process answers), /ready (database migrated), /metrics."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from sqlalchemy import func
from sqlmodel import select

from grainproof.api.contract import Health, Readiness
from grainproof.api.metrics import CONTENT_TYPE
from grainproof.api.openapi import problems
from grainproof.api.runtime import Runtime
from grainproof.errors import GrainproofError
from grainproof.store.database import require_current_schema, session_scope
from grainproof.store.tables import ReferenceLot, ReferenceModelVersion


class SystemController(Controller):
    tags = ("system",)

    @get(
        "/health",
        operation_id="health",
        summary="Liveness: the process answers",
        exclude_from_auth=True,
        responses=problems(authenticated=False),
        security=[{}],
    )
    async def health(self) -> Health:
        """Always `ok` while the process runs (no key needed)."""
        return Health(status="ok")

    @get(
        "/ready",
        operation_id="ready",
        summary="Readiness: database reachable and migrated",
        exclude_from_auth=True,
        sync_to_thread=True,
        security=[{}],
        responses={
            503: ResponseSpec(
                data_container=Readiness,
                description="The database is unreachable or not at the newest migration.",
                generate_examples=False,
            ),
            **problems(authenticated=False),
        },
    )
    def ready(self, runtime: NamedDependency[Runtime]) -> Response[Readiness]:
        """`ready` with the active model version, or 503 `not ready` with the reason (no key needed)."""
        try:
            require_current_schema(runtime.engine)
        except GrainproofError as exc:
            return Response(Readiness(status="not ready", detail=str(exc)), status_code=503)
        with session_scope(runtime.engine) as session:
            active = session.exec(
                select(ReferenceModelVersion.version).where(ReferenceModelVersion.is_active == True)  # noqa: E712
            ).first()
        return Response(Readiness(status="ready", active_model_version=active))

    @get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics",
        description="Request latency histograms by route template and status, verdicts by flag and variety, "
        "model build durations, the number of reference lots, and the calibration monitor's alerts "
        "(`grainproof_monitor_alert`) (text exposition format).",
        media_type=CONTENT_TYPE,
        sync_to_thread=True,
        responses=problems(),
    )
    def metrics(self, runtime: NamedDependency[Runtime]) -> Response[bytes]:
        """Every worker's metrics."""

        def gauges() -> dict[str, float]:
            with session_scope(runtime.engine) as session:
                lots = session.exec(select(func.count()).select_from(ReferenceLot)).one()
            return {"grainproof_reference_lots": float(lots)}

        def alerts() -> list[tuple[dict[str, str], float]]:
            from grainproof.api.services.monitor import alert_gauges
            from grainproof.store.database import read_scope

            with read_scope(runtime.engine) as session:
                return alert_gauges(session, runtime.settings)

        return Response(runtime.metrics.render(gauges, alerts), media_type=CONTENT_TYPE)
