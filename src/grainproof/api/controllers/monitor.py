"""/v1/monitor: the calibration monitor, its alerts, blind-audit estimates, reference staleness (auditors, admins)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import Body, PathParameter, QueryParameter
from sqlmodel import Session

from grainproof.api.auth import requires_role
from grainproof.api.contract import (
    Acknowledgement,
    AcknowledgementInput,
    BlindAuditReport,
    CalibrationReport,
    MonitorTest,
    StalenessReport,
    shaped,
)
from grainproof.api.dependencies import ACCEPTS
from grainproof.api.openapi import problems
from grainproof.api.runtime import Runtime
from grainproof.api.services.monitor import (
    acknowledge_alert,
    blind_audit_report,
    calibration_report,
    monitor_alerts,
    staleness_report,
)
from grainproof.monitor.calibration import DIMENSIONS
from grainproof.store.tables import ApiKey


class MonitorController(Controller):
    path = "/v1/monitor"
    tags = ("monitor",)
    guards = (requires_role("auditor", "admin"),)

    @get(
        "/calibration",
        operation_id="monitor_calibration",
        summary="Realised flag rate per week and group against alpha, with binomial bands, and each group's test",
        description="Every stored verdict counts except lots confirmed as fraud. `weeks` lists each group's "
        "week: verdicts, flags, the flag rate with its exact 95 % interval, and `alpha_band`, the rates a week "
        "of that many genuine lots shows 95 % of the time. `groups` holds each group's sequential tests (flag "
        "rate above alpha; low-confidence share above the tolerated one): a mixture of betting e-processes, "
        "anytime-valid, so the chance of any false alert over the whole stream stays under "
        "GRAINPROOF_MONITOR_FALSE_ALERT_RATE however often it is read.",
        sync_to_thread=True,
        responses=problems(400, 403),
    )
    def calibration(
        self,
        session: NamedDependency[Session],
        runtime: NamedDependency[Runtime],
        dimension: Annotated[
            str, QueryParameter(description=f"Group by: {', '.join(DIMENSIONS)}.", max_length=40)
        ] = "overall",
        weeks: Annotated[int, QueryParameter(ge=1, le=520, description="How many recent weeks to list.")] = 26,
    ) -> CalibrationReport:
        """Weekly flag rates and the group tests of one dimension."""
        return shaped(
            calibration_report(session, runtime.settings, dimension=dimension, weeks=weeks), CalibrationReport
        )

    @get(
        "/alerts",
        operation_id="monitor_alerts",
        summary="The monitor's alerts raised now (or every group's tests with `all=true`)",
        sync_to_thread=True,
        responses=problems(400, 403),
    )
    def alerts(
        self,
        session: NamedDependency[Session],
        runtime: NamedDependency[Runtime],
        all_tests: Annotated[
            bool, QueryParameter(name="all", description="Every group's tests, not only alerting ones.")
        ] = False,
    ) -> list[MonitorTest]:
        """Alerts, strongest evidence first."""
        return shaped(monitor_alerts(session, runtime.settings, alerting_only=not all_tests), list[MonitorTest])

    @post(
        "/alerts/{alert_key:str}/acknowledge",
        operation_id="acknowledge_monitor_alert",
        summary="Acknowledge an alert (recorded in the audit log); its test restarts from lots stored after now",
        status_code=201,
        sync_to_thread=True,
        responses=problems(400, 403, 404, 415),
        opt={ACCEPTS: ("application/json",)},
    )
    def acknowledge(
        self,
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        alert_key: Annotated[str, PathParameter(description="The alert's key, KIND:DIMENSION:GROUP.", max_length=400)],
        data: Annotated[AcknowledgementInput, Body(description="A note saying what was found or done.")],
    ) -> Acknowledgement:
        """Acknowledge one alert."""
        return shaped(acknowledge_alert(runtime, alert_key, note=data.note, caller=caller), Acknowledgement)

    @get(
        "/blind-audit",
        operation_id="monitor_blind_audit",
        summary="Missed-fraud share among unflagged lots and false-alarm share among flagged ones, with intervals",
        description="Blind samples (a keyed random GRAINPROOF_BLIND_AUDIT_RATE share of unflagged lots) reviewed "
        "by auditors estimate the missed-fraud share (inverse-probability weighted by the rate each was drawn "
        "at); reviewed flagged lots estimate the false-alarm share. Overall, per month, per site and both.",
        sync_to_thread=True,
        responses=problems(400, 403),
    )
    def blind_audit(
        self,
        session: NamedDependency[Session],
        runtime: NamedDependency[Runtime],
        level: Annotated[float, QueryParameter(ge=0.5, lt=1.0, description="The intervals' level.")] = 0.9,
    ) -> BlindAuditReport:
        """Blind-audit estimates."""
        return shaped(blind_audit_report(session, runtime.settings, level=level), BlindAuditReport)

    @get(
        "/reference-staleness",
        operation_id="monitor_reference_staleness",
        summary="Per variety: age of the newest reference lots per season, thin-cell share, refresh due",
        sync_to_thread=True,
        responses=problems(400, 403),
    )
    def staleness(
        self,
        session: NamedDependency[Session],
        recent_days: Annotated[
            int, QueryParameter(ge=1, le=3650, description="Verifications of this many recent days count.")
        ] = 90,
    ) -> StalenessReport:
        """Reference staleness per variety."""
        return shaped(staleness_report(session, recent_days=recent_days), StalenessReport)
