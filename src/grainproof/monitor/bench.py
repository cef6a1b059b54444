"""`grainproof bench monitor` and `grainproof bench blind-audit`: the monitor's guarantees measured on
simulated streams, each against a textbook baseline from the same streams.

- monitor: over null streams (no change), how often any alert fires (the sequential test's false-alert
  rate); over streams where an unseen phone joins halfway, after how many of its lots it is alerted.
  Baseline: the weekly binomial test (a week's flag rate above its 95 % band around alpha), read every week.
- blind-audit: how often the 90 % interval of the missed-fraud share covers the truth. Baseline: the Wald
  interval on the same blind samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from grainproof.monitor.calibration import MonitorSettings, clopper_pearson, evaluate_alerts, weekly_rates
from grainproof.monitor.simulation import (
    NEW_PHONE,
    AuditStreamSpec,
    StreamSpec,
    lots_of_group_until,
    simulate_blind_audit,
    simulate_stream,
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorBenchResult:
    spec: StreamSpec
    settings: MonitorSettings
    null_streams: int
    null_streams_alerted: int
    null_false_alert_interval: tuple[float, float]
    weekly_test_null_streams_alerted: int
    drift_streams: int
    flag_alerts: int
    #: Lots of the unseen phone seen when its flag-rate alert fired: median, 90th percentile, max.
    flag_alert_lots: tuple[float, float, float] | None
    low_confidence_alerts: int
    low_confidence_alert_lots: tuple[float, float, float] | None
    #: Drift streams with an alert for a phone other than the new one (a false alert there).
    drift_streams_other_phone_alerted: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["false_alert_rate"] = self.null_streams_alerted / self.null_streams
        data["weekly_test_false_alert_rate"] = self.weekly_test_null_streams_alerted / self.null_streams
        return data


def _quantiles(values: list[int]) -> tuple[float, float, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return float(np.median(array)), float(np.quantile(array, 0.9)), float(array.max())


def run_monitor_bench(
    *,
    spec: StreamSpec,
    settings: MonitorSettings,
    null_streams: int = 200,
    drift_streams: int = 200,
    seed: int = 0,
    progress: Progress | None = None,
) -> MonitorBenchResult:
    """Null streams (false alerts) and drift streams (time to alert for the unseen phone), seeded."""
    rng = np.random.default_rng(seed)
    total = null_streams + drift_streams
    alerted = weekly_alerted = 0
    for i in range(null_streams):
        records = simulate_stream(spec, rng, with_new_phone=False)
        tests = evaluate_alerts(records, settings)
        alerted += any(t.alerting for t in tests)
        weekly_alerted += any(
            week.outside_band
            for dimension in ("overall", "site", "phone", "variety")
            for week in weekly_rates(records, dimension=dimension, alpha=settings.alpha)
        )
        if progress:
            progress(i + 1, total)
    flag_lots: list[int] = []
    low_lots: list[int] = []
    other_phone = 0
    for i in range(drift_streams):
        records = simulate_stream(spec, rng, with_new_phone=True)
        tests = evaluate_alerts(records, settings)
        by_key = {t.key: t for t in tests}
        flag = by_key.get(f"flag_rate:phone:{NEW_PHONE}")
        if flag is not None and flag.alerted_at is not None:
            flag_lots.append(lots_of_group_until(records, dimension="phone", group=NEW_PHONE, at=flag.alerted_at))
        low = by_key.get(f"low_confidence:phone:{NEW_PHONE}")
        if low is not None and low.alerted_at is not None:
            low_lots.append(lots_of_group_until(records, dimension="phone", group=NEW_PHONE, at=low.alerted_at))
        other_phone += any(t.alerting and t.dimension == "phone" and t.group != NEW_PHONE for t in tests)
        if progress:
            progress(null_streams + i + 1, total)
    return MonitorBenchResult(
        spec=spec,
        settings=settings,
        null_streams=null_streams,
        null_streams_alerted=alerted,
        null_false_alert_interval=clopper_pearson(alerted, null_streams, 0.95),
        weekly_test_null_streams_alerted=weekly_alerted,
        drift_streams=drift_streams,
        flag_alerts=len(flag_lots),
        flag_alert_lots=_quantiles(flag_lots),
        low_confidence_alerts=len(low_lots),
        low_confidence_alert_lots=_quantiles(low_lots),
        drift_streams_other_phone_alerted=other_phone,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BlindAuditBenchResult:
    spec: AuditStreamSpec
    streams: int
    true_missed_fraud_share: float
    covered: int
    covered_realised: int
    wald_covered: int
    false_alarm_covered: int
    true_false_alarm_share: float
    mean_blind_samples: float
    mean_interval_width: float

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["coverage"] = self.covered / self.streams
        data["coverage_of_realised_share"] = self.covered_realised / self.streams
        data["wald_coverage"] = self.wald_covered / self.streams
        data["false_alarm_coverage"] = self.false_alarm_covered / self.streams
        return data


def run_blind_audit_bench(
    *, spec: AuditStreamSpec, streams: int = 200, seed: int = 0, progress: Progress | None = None
) -> BlindAuditBenchResult:
    """Coverage of the missed-fraud interval (and the Wald baseline's) over seeded simulated streams."""
    rng = np.random.default_rng(seed)
    truth = spec.missed_fraud_share
    covered = covered_realised = wald = false_alarm = 0
    samples: list[int] = []
    widths: list[float] = []
    for i in range(streams):
        result = simulate_blind_audit(spec, rng)
        covered += result.missed_low <= truth <= result.missed_high
        covered_realised += result.missed_low <= result.realised_missed_share <= result.missed_high
        wald += result.wald_low <= truth <= result.wald_high
        false_alarm += result.false_alarm_low <= spec.false_alarm_share <= result.false_alarm_high
        samples.append(result.blind_samples)
        widths.append(result.missed_high - result.missed_low)
        if progress:
            progress(i + 1, streams)
    return BlindAuditBenchResult(
        spec=spec,
        streams=streams,
        true_missed_fraud_share=truth,
        covered=covered,
        covered_realised=covered_realised,
        wald_covered=wald,
        false_alarm_covered=false_alarm,
        true_false_alarm_share=spec.false_alarm_share,
        mean_blind_samples=float(np.mean(samples)),
        mean_interval_width=float(np.mean(widths)),
    )
