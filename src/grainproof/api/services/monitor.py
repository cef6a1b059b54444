"""The calibration monitor, blind audits and reference staleness, read from the stored verifications.

The statistics are pure functions in `grainproof.monitor`; this module reads the rows they need and writes
the one thing the monitor stores, an auditor's acknowledgement of an alert (with its audit entry).
Verdicts are read whole (their JSON says why a verdict is low-confidence), which is fine for the hundreds of
thousands of lots a cooperative verifies in a few seasons.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from grainproof.api.runtime import Runtime
from grainproof.api.schemas import InvalidParameterError
from grainproof.api.services.verifications import FRAUD_DECISIONS, GENUINE_DECISIONS, Caller, ForbiddenError
from grainproof.errors import NotFoundError
from grainproof.monitor.blind_audit import AuditOutcome, estimates_by
from grainproof.monitor.calibration import (
    ALERT_KINDS,
    DIMENSIONS,
    GroupAlertTest,
    MonitorSettings,
    VerdictRecord,
    evaluate_alerts,
    low_confidence_kinds,
    weekly_rates,
)
from grainproof.monitor.staleness import DeclaredLot, ReferenceLotAge, reference_staleness
from grainproof.settings import Settings
from grainproof.store.audit import acknowledgement_payload, append_entry
from grainproof.store.database import session_scope
from grainproof.store.tables import AlertAcknowledgement, ApiKey, BlindSample, ReferenceLot, Review, Verification
from grainproof.store.tables import UserAccount as UserAccountRow

MAX_NOTE_CHARS = 2000


def monitor_settings(settings: Settings) -> MonitorSettings:
    return MonitorSettings(
        alpha=settings.alpha,
        low_confidence_share=settings.monitor_low_confidence_share,
        false_alert_rate=settings.monitor_false_alert_rate,
    )


def _latest_decisions(session: Session) -> dict[str, str]:
    latest: dict[str, str] = {}
    for verification_id, decision in session.exec(
        select(Review.verification_id, Review.decision).order_by(col(Review.created_at), col(Review.id))
    ):
        latest[verification_id] = decision
    return latest


def _season(claim: dict[str, Any]) -> int | None:
    harvest = claim.get("harvest_date")
    return int(str(harvest)[:4]) if harvest else None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def verdict_records(session: Session, *, decisions: dict[str, str] | None = None) -> list[VerdictRecord]:
    """Every stored verdict the monitor counts, in storage order: all but lots an auditor confirmed as fraud."""
    decisions = _latest_decisions(session) if decisions is None else decisions
    records = []
    for row in session.exec(select(Verification).order_by(col(Verification.created_at), col(Verification.id))):
        if decisions.get(row.id) in FRAUD_DECISIONS:
            continue
        verdict = json.loads(row.verdict_json)
        claim = json.loads(row.claim_json)
        records.append(
            VerdictRecord(
                created_at=_utc(row.created_at),
                flagged=row.flagged,
                low_confidence=low_confidence_kinds(verdict),
                site=row.site,
                phone=claim.get("device"),
                variety=f"{row.species}/{row.variety}",
                model_version=row.model_version,
            )
        )
    return records


def _acknowledgements(session: Session) -> dict[str, AlertAcknowledgement]:
    latest: dict[str, AlertAcknowledgement] = {}
    for ack in session.exec(select(AlertAcknowledgement).order_by(col(AlertAcknowledgement.created_at))):
        latest[ack.alert_key] = ack
    return latest


def _alert_view(test: GroupAlertTest, ack: AlertAcknowledgement | None) -> dict[str, Any]:
    view = test.as_dict()
    view["last_acknowledged_at"] = ack.created_at.isoformat() if ack else None
    view["last_acknowledged_by"] = (ack.acknowledged_by_user or f"key {ack.acknowledged_by}") if ack else None
    view["summary"] = _alert_sentence(test)
    return view


def _alert_sentence(test: GroupAlertTest) -> str:
    what = "all lots" if test.dimension == "overall" else f"{test.dimension.replace('_', ' ')} {test.group}"
    rate = test.test.events / test.test.lots if test.test.lots else 0.0
    if test.kind == "flag_rate":
        return (
            f"{what}: {test.test.events} of {test.test.lots} lots flagged ({rate:.1%}) against alpha "
            f"{test.test.null_rate:g}; e-value {test.test.e_value:.3g} (alert at {test.test.threshold:.3g})."
        )
    return (
        f"{what}: {test.test.events} of {test.test.lots} verdicts low-confidence ({rate:.1%}) against the tolerated "
        f"{test.test.null_rate:.0%}; e-value {test.test.e_value:.3g} (alert at {test.test.threshold:.3g})."
    )


def monitor_alerts(session: Session, settings: Settings, *, alerting_only: bool = True) -> list[dict[str, Any]]:
    """Every group's tests (or only those alerting now), strongest evidence first."""
    acks = _acknowledgements(session)
    tests = evaluate_alerts(
        verdict_records(session),
        monitor_settings(settings),
        acknowledged={key: _utc(ack.created_at) for key, ack in acks.items()},
    )
    chosen = [t for t in tests if t.alerting or not alerting_only]
    chosen.sort(key=lambda t: (not t.alerting, -t.test.e_value / t.test.threshold, t.key))
    return [_alert_view(t, acks.get(t.key)) for t in chosen]


def calibration_report(session: Session, settings: Settings, *, dimension: str, weeks: int) -> dict[str, Any]:
    """Realised flag rates per week for the groups of `dimension` over the last `weeks` weeks, and the alerts."""
    if dimension not in DIMENSIONS:
        raise InvalidParameterError("dimension", f"dimension {dimension!r} is not one of {', '.join(DIMENSIONS)}.")
    if not 1 <= weeks <= 520:
        raise InvalidParameterError("weeks", f"weeks {weeks} must lie between 1 and 520.")
    records = verdict_records(session)
    start = datetime.now(UTC).date() - timedelta(weeks=weeks)
    rates = [r for r in weekly_rates(records, dimension=dimension, alpha=settings.alpha) if r.week >= start]
    acks = _acknowledgements(session)
    tests = evaluate_alerts(
        records,
        monitor_settings(settings),
        acknowledged={key: _utc(ack.created_at) for key, ack in acks.items()},
        dimensions=[dimension],
    )
    return {
        "dimension": dimension,
        "alpha": settings.alpha,
        "low_confidence_share": settings.monitor_low_confidence_share,
        "false_alert_rate": settings.monitor_false_alert_rate,
        "test": "mixture of betting e-processes per group (anytime-valid, Ville's inequality), weighted Bonferroni "
        "over kinds, dimensions and groups",
        "lots": len(records),
        "weeks": [r.as_dict() for r in rates],
        "groups": [_alert_view(t, acks.get(t.key)) for t in tests],
    }


def acknowledge_alert(runtime: Runtime, alert_key: str, *, note: str, caller: Caller) -> dict[str, Any]:
    """Record that an auditor saw an alert: the group's test restarts from lots stored after now."""
    if caller.role not in ("auditor", "admin"):
        raise ForbiddenError("Only auditors and admins can acknowledge monitor alerts.")
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidParameterError("note", f"The note has {len(note)} characters; keep it under {MAX_NOTE_CHARS}.")
    kind, _, rest = alert_key.partition(":")
    dimension, _, group = rest.partition(":")
    if kind not in ALERT_KINDS or dimension not in DIMENSIONS or not group:
        raise InvalidParameterError(
            "alert_key",
            f"{alert_key[:200]!r} is not an alert key: it reads KIND:DIMENSION:GROUP, KIND one of "
            f"{', '.join(ALERT_KINDS)} and DIMENSION one of {', '.join(DIMENSIONS)}.",
        )
    with session_scope(runtime.engine) as session:
        known = {a["key"] for a in monitor_alerts(session, runtime.settings, alerting_only=True)}
        if alert_key not in known:
            raise NotFoundError(f"No alert {alert_key!r} is raised now; nothing to acknowledge.")
        ack = AlertAcknowledgement(
            id=str(uuid.uuid4()),
            alert_key=alert_key,
            note=note,
            acknowledged_by=caller.id if isinstance(caller, ApiKey) else None,
            acknowledged_by_user=caller.username if isinstance(caller, UserAccountRow) else None,
        )
        session.add(ack)
        session.flush()
        append_entry(session, kind="alert_acknowledgement", record_id=ack.id, payload=acknowledgement_payload(ack))
        return acknowledgement_payload(ack)


def blind_audit_report(session: Session, settings: Settings, *, level: float = 0.9) -> dict[str, Any]:
    """Missed-fraud and false-alarm shares with their intervals: overall, per month, per site, per both."""
    if not 0.5 <= level < 1.0:
        raise InvalidParameterError("level", f"level {level} must lie between 0.5 and 1.")
    decisions = _latest_decisions(session)
    rates = dict(session.exec(select(BlindSample.verification_id, BlindSample.audit_rate)).all())
    outcomes = []
    for row_id, created_at, site, flagged in session.exec(
        select(Verification.id, Verification.created_at, Verification.site, Verification.flagged)
    ):
        decision = decisions.get(row_id)
        outcome = "fraud" if decision in FRAUD_DECISIONS else "genuine" if decision in GENUINE_DECISIONS else None
        outcomes.append(
            AuditOutcome(
                period=_utc(created_at).strftime("%Y-%m"),
                site=site or "(unknown)",
                flagged=flagged,
                blind_sample=row_id in rates,
                audit_rate=rates.get(row_id),
                outcome=outcome,
            )
        )
    return {
        "audit_rate": settings.blind_audit_rate,
        "level": level,
        "estimates": [e.as_dict() for e in estimates_by(outcomes, level=level)],
    }


def staleness_report(
    session: Session, *, now: datetime | None = None, recent_days: int = 90, max_age_days: float = 365.0
) -> dict[str, Any]:
    """Per variety: reference lots per season and their age, thin-cell share of recent verifications, refresh due."""
    now = now or datetime.now(UTC)
    reference = [
        ReferenceLotAge(
            species=species,
            variety=variety,
            season=int(harvest[:4]) if harvest else None,
            added_at=_utc(added),
        )
        for species, variety, harvest, added in session.exec(
            select(ReferenceLot.species, ReferenceLot.variety, ReferenceLot.harvest_date, ReferenceLot.created_at)
        )
    ]
    since = now - timedelta(days=recent_days)
    declared = []
    for row in session.exec(select(Verification).where(col(Verification.created_at) >= since)):
        kinds = low_confidence_kinds(json.loads(row.verdict_json))
        declared.append(
            DeclaredLot(
                species=row.species,
                variety=row.variety,
                season=_season(json.loads(row.claim_json)),
                thin_cell="thin_cell" in kinds,
            )
        )
    rows = reference_staleness(reference, declared, now=now, max_age_days=max_age_days)
    return {
        "as_of": now.isoformat(),
        "recent_days": recent_days,
        "max_age_days": max_age_days,
        "varieties": [r.as_dict() for r in rows],
    }


def alert_gauges(session: Session, settings: Settings) -> list[tuple[dict[str, str], float]]:
    """For /metrics: one 0/1 value per group test (1: alerting), labelled by kind, dimension and group."""
    return [
        ({"kind": a["kind"], "dimension": a["dimension"], "group": a["group"]}, 1.0 if a["alerting"] else 0.0)
        for a in monitor_alerts(session, settings, alerting_only=False)
    ]


def weekly_rate_png(session: Session, settings: Settings, *, dimension: str, weeks: int = 26) -> bytes:
    """The desk's picture of one dimension: weekly flag rates per group against alpha and its band."""
    from grainproof.monitor.plots import weekly_rate_plot

    if dimension not in DIMENSIONS:
        raise NotFoundError(f"No monitor plot for {dimension!r}; one of {', '.join(DIMENSIONS)}.")
    start = datetime.now(UTC).date() - timedelta(weeks=weeks)
    rates = [
        r for r in weekly_rates(verdict_records(session), dimension=dimension, alpha=settings.alpha) if r.week >= start
    ]
    label = "all lots" if dimension == "overall" else f"by {dimension.replace('_', ' ')}"
    return weekly_rate_plot(rates, alpha=settings.alpha, title=f"Weekly flag rate, {label}")
