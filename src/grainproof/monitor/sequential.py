"""The monitor's alert test: does a group's rate (of flags, or of low-confidence verdicts) exceed its null rate?

We use a betting e-process rather than a CUSUM because the desk looks at the monitor whenever it likes, as
often as it likes, and for as long as the service runs: an e-process is *anytime-valid*. Under the null
(each verdict of the group is flagged with probability at most `null_rate`, given everything before it)
the wealth of a gambler betting against the null is a nonnegative supermartingale starting at 1, and by
Ville's inequality the chance that it *ever* reaches 1/delta is at most delta, whenever one stops or peeks
(optional stopping). A CUSUM controls the average run length to a false alarm instead, which says little
about one alert on one stream. The price is a somewhat later alert.

The gambler bets a fixed fraction `c` of its wealth on "flagged" at each verdict, for several fractions at
once, and the e-process is their average (a mixture of e-processes is one): the monitor does not have to
guess how far the rate will move. For one fraction, a flag multiplies the wealth by 1 + c (1 - r) / r and
an unflagged verdict by 1 - c, r the null rate; its expectation under the null is at most 1.

Many groups are tested at once (every site, phone, variety, model version), so the false-alert budget is
split by weighted Bonferroni: each kind of test and dimension gets an equal share, and within a dimension
the i-th group to appear gets the share 1 / (i (i + 1)) of it (these sum to 1 for any number of groups, and
a group's share is fixed before its first verdict is seen, so the split stays valid as new groups appear).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

#: Fractions of wealth bet on "flagged" at each verdict, mixed with equal weights. A Kelly bettor facing a
#: rate q against a null r bets (q - r) / (1 - r): these cover rates from a little above r to several times it.
BET_FRACTIONS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_MAX_LOG_E = 690.0


def _check(null_rate: float, fractions: Sequence[float]) -> np.ndarray:
    if not 0.0 < null_rate < 1.0:
        raise ValueError(f"null_rate={null_rate} must lie strictly between 0 and 1")
    bets = np.asarray(fractions, dtype=np.float64)
    if bets.ndim != 1 or bets.size == 0 or np.any(bets <= 0.0) or np.any(bets >= 1.0):
        raise ValueError("bet fractions must be a non-empty list of numbers strictly between 0 and 1")
    return bets


def log_e_process(
    outcomes: np.ndarray | Sequence[bool], null_rate: float, fractions: Sequence[float] = BET_FRACTIONS
) -> np.ndarray:
    """The natural log of the e-process after each outcome (length n; before any outcome it is log 1 = 0).

    `outcomes` are 0/1 (flagged or not) in the order the verdicts were stored.
    """
    bets = _check(null_rate, fractions)
    x = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return np.zeros(0)
    if np.any((x != 0.0) & (x != 1.0)):
        raise ValueError("outcomes must be 0 or 1")
    up = np.log1p(bets * (1.0 - null_rate) / null_rate)
    down = np.log1p(-bets)
    hits = np.cumsum(x)
    misses = np.arange(1, x.size + 1) - hits
    per_bet = hits[:, None] * up[None, :] + misses[:, None] * down[None, :]
    return np.asarray(logsumexp(per_bet, axis=1) - np.log(bets.size))


def e_process(
    outcomes: np.ndarray | Sequence[bool], null_rate: float, fractions: Sequence[float] = BET_FRACTIONS
) -> np.ndarray:
    """The e-process (the mixed gambler's wealth) after each outcome."""
    return np.exp(log_e_process(outcomes, null_rate, fractions))


def group_weight(rank: int) -> float:
    """The share of its dimension's false-alert budget the `rank`-th group to appear gets (1 / (i (i + 1)))."""
    if rank < 1:
        raise ValueError("rank counts from 1")
    return 1.0 / (rank * (rank + 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class SequentialTest:
    """One group's test: its e-value now, the level it must reach, and when (if ever) it first did."""

    lots: int
    events: int
    null_rate: float
    e_value: float
    max_e_value: float
    threshold: float
    #: How many of the group's lots had been seen when the e-process first reached the threshold (None: never).
    alert_after: int | None

    @property
    def alerting(self) -> bool:
        return self.alert_after is not None


def sequential_test(
    outcomes: np.ndarray | Sequence[bool],
    *,
    null_rate: float,
    false_alert_rate: float,
    fractions: Sequence[float] = BET_FRACTIONS,
) -> SequentialTest:
    """Run the e-process over `outcomes` and alert once it reaches 1 / false_alert_rate (Ville's inequality)."""
    if not 0.0 < false_alert_rate < 1.0:
        raise ValueError(f"false_alert_rate={false_alert_rate} must lie strictly between 0 and 1")
    x = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    log_e = log_e_process(x, null_rate, fractions)
    log_threshold = -np.log(false_alert_rate)
    crossed = np.flatnonzero(log_e >= log_threshold)
    return SequentialTest(
        lots=int(x.size),
        events=int(x.sum()),
        null_rate=null_rate,
        # Capped so the value stays a finite float in JSON: past 1e300 the evidence is overwhelming anyway.
        e_value=float(np.exp(min(log_e[-1], _MAX_LOG_E))) if x.size else 1.0,
        max_e_value=float(np.exp(min(log_e.max(), _MAX_LOG_E))) if x.size else 1.0,
        threshold=float(1.0 / false_alert_rate),
        alert_after=int(crossed[0]) + 1 if crossed.size else None,
    )
