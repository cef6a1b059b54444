"""Simulated verdict streams for the monitor's benchmarks, at the p-value level.

A genuine lot's conformal p-value is uniform on (0, 1), so it is flagged with probability alpha. A phone the
reference never saw shifts its lots' p-values towards 0: they are drawn from Beta(a, 1) with a < 1 chosen so
that P(p <= alpha) = alpha^a is the phone's flag rate, and every one of its verdicts carries the
unseen-phone warning (low confidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy.stats import norm

from grainproof.monitor.blind_audit import AuditOutcome, estimate, is_blind_sample
from grainproof.monitor.calibration import VerdictRecord

STREAM_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
NEW_PHONE = "unseen-phone"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """The simulated intake: how many verdicts over how many weeks, the groups, and the rates."""

    lots: int = 5000
    weeks: int = 20
    alpha: float = 0.01
    sites: int = 4
    phones: int = 6
    varieties: int = 3
    low_confidence_share: float = 0.1
    #: The new phone: its share of the lots once it has joined, its flag rate, and when it joins (share of lots).
    new_phone_share: float = 0.15
    new_phone_flag_rate: float = 0.08
    joins_at: float = 0.5


def simulate_stream(spec: StreamSpec, rng: np.random.Generator, *, with_new_phone: bool) -> list[VerdictRecord]:
    """One stream of verdicts in storage order; with `with_new_phone`, the unseen phone joins at `joins_at`."""
    seconds = np.sort(rng.uniform(0, spec.weeks * 7 * 86400, spec.lots))
    times = [STREAM_START + timedelta(seconds=float(s)) for s in seconds]
    joined = np.arange(spec.lots) >= int(spec.joins_at * spec.lots)
    new_phone = with_new_phone & joined & (rng.random(spec.lots) < spec.new_phone_share)
    p = rng.random(spec.lots)
    if new_phone.any():
        shape = math.log(spec.new_phone_flag_rate) / math.log(spec.alpha)
        p[new_phone] = rng.random(int(new_phone.sum())) ** (1.0 / shape)  # Beta(shape, 1) by inversion
    low = rng.random(spec.lots) < spec.low_confidence_share
    sites = rng.integers(0, spec.sites, spec.lots)
    phones = rng.integers(0, spec.phones, spec.lots)
    varieties = rng.integers(0, spec.varieties, spec.lots)
    return [
        VerdictRecord(
            created_at=times[i],
            flagged=bool(p[i] <= spec.alpha),
            low_confidence=("unseen_phone",) if new_phone[i] else (("unmeasured",) if low[i] else ()),
            site=f"site-{sites[i]}",
            phone=NEW_PHONE if new_phone[i] else f"phone-{phones[i]}",
            variety=f"variety-{varieties[i]}",
            model_version="v1",
        )
        for i in range(spec.lots)
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditStreamSpec:
    """A stream with a known fraud rate and detection rate, blind-sampled at `audit_rate`."""

    lots: int = 5000
    fraud_rate: float = 0.05
    detection_rate: float = 0.6
    alpha: float = 0.01
    audit_rate: float = 0.02
    level: float = 0.9

    @property
    def missed_fraud_share(self) -> float:
        """The true share of false declarations among unflagged lots."""
        missed = self.fraud_rate * (1.0 - self.detection_rate)
        return missed / (missed + (1.0 - self.fraud_rate) * (1.0 - self.alpha))

    @property
    def false_alarm_share(self) -> float:
        """The true share of genuine lots among flagged ones."""
        alarms = (1.0 - self.fraud_rate) * self.alpha
        return alarms / (alarms + self.fraud_rate * self.detection_rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditStreamResult:
    blind_samples: int
    blind_frauds: int
    missed_low: float
    missed_high: float
    realised_missed_share: float
    false_alarm_low: float
    false_alarm_high: float
    wald_low: float
    wald_high: float


def simulate_blind_audit(spec: AuditStreamSpec, rng: np.random.Generator) -> AuditStreamResult:
    """One stream: lots, flags, the keyed blind draw (a fresh secret), every sample and flag reviewed truly."""
    fraud = rng.random(spec.lots) < spec.fraud_rate
    flagged = np.where(fraud, rng.random(spec.lots) < spec.detection_rate, rng.random(spec.lots) < spec.alpha)
    secret = rng.bytes(32)
    blind = np.array(
        [
            is_blind_sample(secret, f"verification-{i}", flagged=bool(flagged[i]), rate=spec.audit_rate)
            for i in range(spec.lots)
        ]
    )
    outcomes = [
        AuditOutcome(
            period="sim",
            site="sim",
            flagged=bool(flagged[i]),
            blind_sample=bool(blind[i]),
            audit_rate=spec.audit_rate if blind[i] else None,
            outcome="fraud" if fraud[i] else "genuine",
        )
        for i in range(spec.lots)
        if flagged[i] or blind[i]
    ]
    result = estimate(outcomes, period="sim", site="sim", level=spec.level)
    n = result.missed_fraud.reviewed
    share = result.missed_fraud.share or 0.0
    z = float(norm.ppf(0.5 + spec.level / 2.0))  # the textbook Wald interval: the baseline
    half = z * math.sqrt(share * (1.0 - share) / n) if n else 1.0
    unflagged = ~flagged
    return AuditStreamResult(
        blind_samples=n,
        blind_frauds=result.missed_fraud.events,
        missed_low=result.missed_fraud.low,
        missed_high=result.missed_fraud.high,
        realised_missed_share=float(fraud[unflagged].mean()) if unflagged.any() else 0.0,
        false_alarm_low=result.false_alarm.low,
        false_alarm_high=result.false_alarm.high,
        wald_low=max(0.0, share - half),
        wald_high=min(1.0, share + half),
    )


def lots_of_group_until(records: Sequence[VerdictRecord], *, dimension: str, group: str, at: datetime) -> int:
    """How many lots of `group` had been stored up to and including `at`."""
    return sum(1 for r in records if r.group(dimension) == group and r.created_at <= at)
