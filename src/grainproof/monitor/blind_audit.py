"""Blind audits: a keyed random share of unflagged lots goes to the auditors, so the desk can estimate what
the flags miss.

The draw is an HMAC-SHA256 of the verification id under a server secret, read as a number in [0, 1): the
intake knows neither the secret nor the id (the service makes it up after the lot is sent), so it cannot
steer a lot in or out of the sample, and anyone holding the secret can re-check every draw.

Estimates, each with an interval:
- missed-fraud share: among unflagged lots, the share of false declarations, from reviewed blind samples
  (each weighted by the inverse of the audit rate it was drawn at, so a rate changed mid-month still gives
  an unbiased estimate);
- false-alarm share: among flagged lots, the share of genuine ones, from reviewed flagged lots. Unlike blind
  samples, the reviewed flags are the ones auditors chose to work: the estimate assumes the unreviewed flags
  are like them, so it reports its coverage (reviewed / flagged) alongside.

"inconclusive" reviews count in neither the numerator nor the denominator.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from grainproof.monitor.calibration import clopper_pearson


def blind_audit_draw(secret: bytes, verification_id: str) -> float:
    """The verification's keyed draw, uniform in [0, 1) for anyone without the secret."""
    digest = hmac.new(secret, verification_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_blind_sample(secret: bytes, verification_id: str, *, flagged: bool, rate: float) -> bool:
    """Whether an unflagged verification is drawn for a blind audit at `rate` (flagged ones are audited anyway)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate={rate} must lie between 0 and 1")
    return not flagged and blind_audit_draw(secret, verification_id) < rate


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareEstimate:
    """An estimated share with its interval: `events` of `reviewed` (weighted when the audit rates differ)."""

    events: int
    reviewed: int
    share: float | None
    low: float
    high: float
    level: float
    #: "clopper-pearson" (exact, equal weights) or "wilson-kish" (Wilson's interval at Kish's effective size).
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "reviewed": self.reviewed,
            "share": self.share,
            "interval": [self.low, self.high],
            "level": self.level,
            "method": self.method,
        }


def weighted_share(events: Sequence[bool], weights: Sequence[float] | None = None, *, level: float) -> ShareEstimate:
    """The (inverse-probability weighted) share of `events`, with a two-sided interval at `level`.

    Equal weights: the exact Clopper-Pearson interval. Unequal ones: the Hajek estimate, with Wilson's
    interval at Kish's effective sample size (sum w)^2 / sum w^2.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must lie strictly between 0 and 1")
    x = np.asarray(events, dtype=bool)
    n = int(x.size)
    k = int(x.sum())
    if n == 0:
        return ShareEstimate(events=0, reviewed=0, share=None, low=0.0, high=1.0, level=level, method="clopper-pearson")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape or np.any(w <= 0.0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be positive, finite, one per event")
    if np.allclose(w, w[0]):
        low, high = clopper_pearson(k, n, level)
        return ShareEstimate(
            events=k, reviewed=n, share=k / n, low=low, high=high, level=level, method="clopper-pearson"
        )
    share = float(np.sum(w * x) / np.sum(w))
    effective = float(np.sum(w) ** 2 / np.sum(w**2))
    low, high = _wilson(share, effective, level)
    return ShareEstimate(events=k, reviewed=n, share=share, low=low, high=high, level=level, method="wilson-kish")


def _wilson(share: float, n: float, level: float) -> tuple[float, float]:
    z = float(norm.ppf(0.5 + level / 2.0))
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditOutcome:
    """One lot the audit estimates draw on: when and where, whether flagged or a blind sample, and the review."""

    period: str  # e.g. "2026-11" (a month)
    site: str
    flagged: bool
    blind_sample: bool
    #: The audit rate the blind sample was drawn at (None for flagged lots).
    audit_rate: float | None
    #: "fraud", "genuine", None (not reviewed yet, or inconclusive).
    outcome: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEstimate:
    """The missed-fraud and false-alarm shares of one period and site ("all" for every one)."""

    period: str
    site: str
    unflagged_lots: int
    flagged_lots: int
    blind_samples: int
    blind_reviewed: int
    flagged_reviewed: int
    missed_fraud: ShareEstimate
    false_alarm: ShareEstimate

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "site": self.site,
            "unflagged_lots": self.unflagged_lots,
            "flagged_lots": self.flagged_lots,
            "blind_samples": self.blind_samples,
            "blind_reviewed": self.blind_reviewed,
            "flagged_reviewed": self.flagged_reviewed,
            "flag_review_coverage": self.flagged_reviewed / self.flagged_lots if self.flagged_lots else None,
            "missed_fraud_share": self.missed_fraud.as_dict(),
            "false_alarm_share": self.false_alarm.as_dict(),
        }


def estimate(outcomes: Sequence[AuditOutcome], *, period: str, site: str, level: float) -> AuditEstimate:
    """Both shares over `outcomes` (already the lots of one period and site)."""
    blind = [o for o in outcomes if o.blind_sample and not o.flagged]
    blind_done = [o for o in blind if o.outcome is not None]
    flagged = [o for o in outcomes if o.flagged]
    flagged_done = [o for o in flagged if o.outcome is not None]
    missed = weighted_share(
        [o.outcome == "fraud" for o in blind_done],
        [1.0 / (o.audit_rate or 1.0) for o in blind_done],
        level=level,
    )
    false_alarm = weighted_share([o.outcome == "genuine" for o in flagged_done], level=level)
    return AuditEstimate(
        period=period,
        site=site,
        unflagged_lots=sum(not o.flagged for o in outcomes),
        flagged_lots=len(flagged),
        blind_samples=len(blind),
        blind_reviewed=len(blind_done),
        flagged_reviewed=len(flagged_done),
        missed_fraud=missed,
        false_alarm=false_alarm,
    )


def estimates_by(outcomes: Sequence[AuditOutcome], *, level: float) -> list[AuditEstimate]:
    """Estimates overall, per period, per site and per period and site ("all" marks the pooled side)."""
    keys: dict[tuple[str, str], list[AuditOutcome]] = {}
    for outcome in outcomes:
        for key in (("all", "all"), (outcome.period, "all"), ("all", outcome.site), (outcome.period, outcome.site)):
            keys.setdefault(key, []).append(outcome)
    return [
        estimate(group, period=period, site=site, level=level)
        for (period, site), group in sorted(keys.items(), key=lambda item: (item[0][0] != "all", item[0]))
    ]
