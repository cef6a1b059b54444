"""The calibration monitor: realised flag rates per week and group against alpha, and the alerts.

The promise is that among genuine lots about alpha are flagged, whatever the site, phone, variety or
reference model version. The monitor counts every stored verdict except lots an auditor confirmed as
fraud (those were rightly flagged and say nothing about genuine lots); unreviewed flagged lots do count,
so a site sending many false declarations also raises its flag rate: the alert then says "look here",
and the review tells a real fraud wave from drift.

Two kinds of alert, each a sequential test per group (see `sequential`):
- `flag_rate`: the group's flag rate is above alpha;
- `low_confidence`: the group's share of low-confidence verdicts (unmeasured photos, a phone the reference
  never saw, a thin reference cell, a verdict that cannot flag or is uncalibrated) is above what the
  service tolerates (`GRAINPROOF_MONITOR_LOW_CONFIDENCE_SHARE`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from scipy.stats import binom, binomtest

from grainproof.monitor.sequential import SequentialTest, group_weight, sequential_test
from grainproof.scoring.plausibility import UNMEASURED_WARNING, UNSEEN_PHONE_SIZE_WARNING, UNSEEN_PHONE_WARNING_START
from grainproof.scoring.verdict import THIN_REFERENCE_REASON

#: The groupings the monitor follows; "overall" is the whole stream as one group.
DIMENSIONS: tuple[str, ...] = ("overall", "site", "phone", "variety", "model_version")
#: The tests run in every group.
ALERT_KINDS: tuple[str, ...] = ("flag_rate", "low_confidence")
#: Why a verdict is low-confidence (a verdict may have several reasons).
LOW_CONFIDENCE_KINDS: tuple[str, ...] = ("unmeasured", "unseen_phone", "thin_cell", "cannot_flag", "uncalibrated")
#: The label of a group whose value is missing (no site, no phone named).
UNKNOWN = "(unknown)"


def low_confidence_kinds(verdict: Mapping[str, Any]) -> tuple[str, ...]:
    """Why a stored verdict (its JSON, as `Verdict.as_dict` wrote it) is low-confidence; () when it is not."""
    warnings = [str(w) for w in verdict.get("warnings", ())]
    reasons = [str(r) for r in verdict.get("reasons", ())]
    found: list[str] = []
    if UNMEASURED_WARNING in warnings:
        found.append("unmeasured")
    if any(w.startswith(UNSEEN_PHONE_WARNING_START) for w in warnings) or UNSEEN_PHONE_SIZE_WARNING in warnings:
        found.append("unseen_phone")
    if THIN_REFERENCE_REASON in reasons:
        found.append("thin_cell")
    if verdict.get("status") in ("cannot_flag", "uncalibrated"):
        found.append(str(verdict["status"]))
    if not found and verdict.get("low_confidence"):
        # A low-confidence verdict for a reason this monitor does not name yet still counts as one.
        found.append("other")
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictRecord:
    """What the monitor needs of one stored verdict."""

    created_at: datetime
    flagged: bool
    low_confidence: tuple[str, ...] = ()
    site: str | None = None
    phone: str | None = None
    variety: str = ""
    model_version: str = ""

    def group(self, dimension: str) -> str:
        """This verdict's group in `dimension` (UNKNOWN when the value is missing)."""
        if dimension == "overall":
            return "all"
        value = getattr(self, dimension)
        return str(value) if value else UNKNOWN


def week_start(moment: datetime) -> date:
    """The Monday (UTC) of the ISO week `moment` falls in."""
    day = moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
    return day - timedelta(days=day.weekday())


def clopper_pearson(events: int, trials: int, level: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial proportion; (0, 1) without trials."""
    if trials == 0:
        return 0.0, 1.0
    interval = binomtest(events, trials).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)


def null_band(trials: int, rate: float, level: float) -> tuple[float, float]:
    """The range of realised rates a week of `trials` verdicts shows with probability `level` if the true rate is
    `rate` (binomial quantiles divided by the trials): a week outside it is unusual, one week at a time."""
    if trials == 0:
        return 0.0, 1.0
    tail = (1.0 - level) / 2.0
    low, high = binom.ppf([tail, 1.0 - tail], trials, rate)
    return float(low) / trials, float(high) / trials


@dataclass(frozen=True, slots=True, kw_only=True)
class WeeklyRate:
    """One group's week: verdicts, flags, low-confidence ones, the flag rate with its interval and alpha's band."""

    dimension: str
    group: str
    week: date
    lots: int
    flagged: int
    low_confidence: int
    flag_rate: float
    flag_rate_interval: tuple[float, float]
    alpha_band: tuple[float, float]
    low_confidence_share: float

    @property
    def outside_band(self) -> bool:
        return self.flag_rate > self.alpha_band[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "group": self.group,
            "week": self.week.isoformat(),
            "lots": self.lots,
            "flagged": self.flagged,
            "low_confidence": self.low_confidence,
            "flag_rate": self.flag_rate,
            "flag_rate_interval": list(self.flag_rate_interval),
            "alpha_band": list(self.alpha_band),
            "above_band": self.outside_band,
            "low_confidence_share": self.low_confidence_share,
        }


def weekly_rates(
    records: Sequence[VerdictRecord], *, dimension: str, alpha: float, level: float = 0.95
) -> list[WeeklyRate]:
    """The realised flag rate of every group of `dimension` in every week it had verdicts, oldest week first."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension {dimension!r} is not one of {', '.join(DIMENSIONS)}")
    counts: dict[tuple[str, date], list[int]] = {}
    for record in records:
        key = (record.group(dimension), week_start(record.created_at))
        tally = counts.setdefault(key, [0, 0, 0])
        tally[0] += 1
        tally[1] += int(record.flagged)
        tally[2] += int(bool(record.low_confidence))
    rows = []
    for (group, week), (lots, flagged, low) in sorted(counts.items(), key=lambda item: (item[0][1], item[0][0])):
        rows.append(
            WeeklyRate(
                dimension=dimension,
                group=group,
                week=week,
                lots=lots,
                flagged=flagged,
                low_confidence=low,
                flag_rate=flagged / lots,
                flag_rate_interval=clopper_pearson(flagged, lots, level),
                alpha_band=null_band(lots, alpha, level),
                low_confidence_share=low / lots,
            )
        )
    return rows


def alert_key(kind: str, dimension: str, group: str) -> str:
    """The stable name of one group's alert, as acknowledgements refer to it."""
    return f"{kind}:{dimension}:{group}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupAlertTest:
    """One sequential test of one group, what it says now and when it alerted."""

    kind: str
    dimension: str
    group: str
    rank: int
    test: SequentialTest
    #: Lots of the group counted (those stored after its last acknowledgement) and the rate seen in them.
    since: datetime | None
    first_lot_at: datetime | None
    alerted_at: datetime | None

    @property
    def key(self) -> str:
        return alert_key(self.kind, self.dimension, self.group)

    @property
    def alerting(self) -> bool:
        return self.test.alerting

    def as_dict(self) -> dict[str, Any]:
        rate = self.test.events / self.test.lots if self.test.lots else 0.0
        return {
            "key": self.key,
            "kind": self.kind,
            "dimension": self.dimension,
            "group": self.group,
            "alerting": self.alerting,
            "lots": self.test.lots,
            "events": self.test.events,
            "rate": rate,
            "null_rate": self.test.null_rate,
            "e_value": self.test.e_value,
            "max_e_value": self.test.max_e_value,
            "threshold": self.test.threshold,
            "alert_after_lots": self.test.alert_after,
            "alerted_at": self.alerted_at.isoformat() if self.alerted_at else None,
            "since": self.since.isoformat() if self.since else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorSettings:
    """The monitor's levels: alpha (the promised flag rate), the tolerated low-confidence share, and the
    probability of any false alert over the whole stream, shared by every test of every group."""

    alpha: float
    low_confidence_share: float = 0.25
    false_alert_rate: float = 0.05

    def __post_init__(self) -> None:
        for name in ("alpha", "low_confidence_share", "false_alert_rate"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name}={value} must lie strictly between 0 and 1")

    def group_false_alert_rate(self, dimension: str, rank: int) -> float:
        """The share of the budget one group's test gets (weighted Bonferroni over kinds, dimensions, groups)."""
        per_dimension = self.false_alert_rate / (len(ALERT_KINDS) * len(DIMENSIONS))
        return per_dimension if dimension == "overall" else per_dimension * group_weight(rank)


@dataclass(slots=True)
class _Column:
    rank: int
    first: datetime | None = None
    times: list[datetime] = field(default_factory=list)
    flags: list[bool] = field(default_factory=list)
    low: list[bool] = field(default_factory=list)


def evaluate_alerts(
    records: Sequence[VerdictRecord],
    settings: MonitorSettings,
    *,
    acknowledged: Mapping[str, datetime] | None = None,
    dimensions: Sequence[str] = DIMENSIONS,
) -> list[GroupAlertTest]:
    """Every group's tests over `records` (in the order they were stored). A test restarts from the lots stored
    after its last acknowledgement, so an acknowledged alert stays quiet until new evidence builds up."""
    acknowledged = acknowledged or {}
    results: list[GroupAlertTest] = []
    for dimension in dimensions:
        if dimension not in DIMENSIONS:
            raise ValueError(f"dimension {dimension!r} is not one of {', '.join(DIMENSIONS)}")
        columns: dict[str, _Column] = {}
        for record in records:
            group = record.group(dimension)
            column = columns.get(group)
            if column is None:
                column = columns[group] = _Column(rank=len(columns) + 1, first=record.created_at)
            column.times.append(record.created_at)
            column.flags.append(record.flagged)
            column.low.append(bool(record.low_confidence))
        for group, column in columns.items():
            rate = settings.group_false_alert_rate(dimension, column.rank)
            for kind, null_rate, outcomes in (
                ("flag_rate", settings.alpha, column.flags),
                ("low_confidence", settings.low_confidence_share, column.low),
            ):
                since = acknowledged.get(alert_key(kind, dimension, group))
                start = 0 if since is None else _first_after(column.times, since)
                test = sequential_test(
                    np.asarray(outcomes[start:], dtype=bool), null_rate=null_rate, false_alert_rate=rate
                )
                alerted_at = column.times[start + test.alert_after - 1] if test.alert_after is not None else None
                results.append(
                    GroupAlertTest(
                        kind=kind,
                        dimension=dimension,
                        group=group,
                        rank=column.rank,
                        test=test,
                        since=since,
                        first_lot_at=column.first,
                        alerted_at=alerted_at,
                    )
                )
    return results


def _first_after(times: Sequence[datetime], moment: datetime) -> int:
    for index, when in enumerate(times):
        if _utc(when) > _utc(moment):
            return index
    return len(times)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
