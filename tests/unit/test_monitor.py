"""The monitor's statistics: the e-process is a nonnegative supermartingale under the null and never alerts on
unflagged streams, weekly bands and intervals are proper, the blind-audit draw is keyed and at the stated rate,
the missed-fraud interval behaves, and staleness says when a refresh is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grainproof.monitor.blind_audit import (
    AuditOutcome,
    blind_audit_draw,
    estimate,
    is_blind_sample,
    weighted_share,
)
from grainproof.monitor.calibration import (
    MonitorSettings,
    VerdictRecord,
    evaluate_alerts,
    low_confidence_kinds,
    weekly_rates,
)
from grainproof.monitor.sequential import BET_FRACTIONS, e_process, group_weight, log_e_process, sequential_test
from grainproof.monitor.staleness import DeclaredLot, ReferenceLotAge, reference_staleness
from grainproof.scoring.plausibility import UNMEASURED_WARNING
from grainproof.scoring.verdict import THIN_REFERENCE_REASON

rates = st.floats(min_value=0.001, max_value=0.5)
streams = st.lists(st.booleans(), min_size=1, max_size=300)


@given(streams, rates)
def test_e_process_is_nonnegative_and_starts_from_one(outcomes: list[bool], rate: float) -> None:
    values = e_process(outcomes, rate)
    assert values.shape == (len(outcomes),)
    assert np.all(values >= 0.0)
    # The first step is the average of 1 + c (x - r) / r over the bets.
    first = np.mean([1 + c * ((1.0 if outcomes[0] else 0.0) - rate) / rate for c in BET_FRACTIONS])
    assert values[0] == pytest.approx(first)


@given(st.integers(min_value=0, max_value=200), rates)
def test_e_process_is_a_supermartingale_under_the_null(prefix_hits: int, rate: float) -> None:
    # From any state, the expected next value with the flag probability at the null rate equals the current one.
    history = [True] * (prefix_hits % 5) + [False] * prefix_hits
    now = e_process(history, rate)[-1] if history else 1.0
    up = e_process([*history, True], rate)[-1]
    down = e_process([*history, False], rate)[-1]
    assert rate * up + (1 - rate) * down <= now * (1 + 1e-9)


@given(st.integers(min_value=1, max_value=5000), rates)
def test_all_unflagged_stream_never_alerts(lots: int, rate: float) -> None:
    test = sequential_test(np.zeros(lots, dtype=bool), null_rate=rate, false_alert_rate=0.05)
    assert not test.alerting
    assert test.max_e_value <= 1.0


def test_sustained_rate_above_alpha_alerts_and_null_streams_rarely_do() -> None:
    rng = np.random.default_rng(1)
    assert sequential_test(rng.random(2000) < 0.08, null_rate=0.01, false_alert_rate=0.01).alerting
    alerted = sum(
        sequential_test(rng.random(2000) < 0.01, null_rate=0.01, false_alert_rate=0.05).alerting for _ in range(200)
    )
    assert alerted <= 20  # Ville: at most 5 % in expectation; 20 of 200 would be far outside chance


def test_group_weights_sum_to_at_most_one() -> None:
    assert sum(group_weight(i) for i in range(1, 10_000)) < 1.0
    with pytest.raises(ValueError):
        group_weight(0)


def test_log_e_process_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        log_e_process([0.5], 0.1)
    with pytest.raises(ValueError):
        log_e_process([1], 1.5)


def _records(flags: list[bool], phone: str = "p1", start: datetime | None = None) -> list[VerdictRecord]:
    start = start or datetime(2026, 3, 2, tzinfo=UTC)
    return [
        VerdictRecord(created_at=start + timedelta(hours=i), flagged=f, phone=phone, variety="v", model_version="m")
        for i, f in enumerate(flags)
    ]


@given(st.lists(st.booleans(), min_size=1, max_size=400))
@settings(max_examples=30)
def test_weekly_rates_count_every_verdict_once_and_bands_hold_alpha(flags: list[bool]) -> None:
    rows = weekly_rates(_records(flags), dimension="phone", alpha=0.05)
    assert sum(r.lots for r in rows) == len(flags)
    assert sum(r.flagged for r in rows) == sum(flags)
    for row in rows:
        assert 0.0 <= row.flag_rate_interval[0] <= row.flag_rate <= row.flag_rate_interval[1] <= 1.0
        assert row.alpha_band[0] <= 0.05 <= row.alpha_band[1]


def test_acknowledged_alert_restarts_from_later_lots() -> None:
    records = _records([True] * 30 + [False] * 10)
    monitor = MonitorSettings(alpha=0.01)
    before = {t.key: t for t in evaluate_alerts(records, monitor)}
    assert before["flag_rate:phone:p1"].alerting
    acknowledged_at = records[-11].created_at
    after = {t.key: t for t in evaluate_alerts(records, monitor, acknowledged={"flag_rate:phone:p1": acknowledged_at})}
    assert not after["flag_rate:phone:p1"].alerting
    assert after["flag_rate:phone:p1"].test.lots == 10


def test_low_confidence_kinds_name_each_reason() -> None:
    assert low_confidence_kinds({"status": "plausible", "warnings": [], "reasons": []}) == ()
    verdict = {
        "status": "cannot_flag",
        "warnings": [UNMEASURED_WARNING, "No reference lot was photographed with this phone (x), so ..."],
        "reasons": [THIN_REFERENCE_REASON],
        "low_confidence": True,
    }
    assert low_confidence_kinds(verdict) == ("unmeasured", "unseen_phone", "thin_cell", "cannot_flag")
    assert low_confidence_kinds({"low_confidence": True}) == ("other",)


def test_blind_draw_is_keyed_deterministic_and_at_the_rate() -> None:
    secret = b"server secret"
    ids = [f"id-{i}" for i in range(20_000)]
    draws = [blind_audit_draw(secret, i) for i in ids]
    assert draws == [blind_audit_draw(secret, i) for i in ids]
    assert draws != [blind_audit_draw(b"another secret", i) for i in ids]
    chosen = sum(is_blind_sample(secret, i, flagged=False, rate=0.02) for i in ids)
    assert 0.015 * len(ids) < chosen < 0.025 * len(ids)
    assert not any(is_blind_sample(secret, i, flagged=True, rate=1.0) for i in ids[:100])


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=60))
def test_share_interval_contains_the_estimate(events: int, extra: int) -> None:
    n = events + extra
    result = weighted_share([True] * events + [False] * extra, level=0.9)
    assert result.share is not None
    assert result.low <= result.share <= result.high
    weighted = weighted_share([True] * events + [False] * extra, [1.0] * events + [3.0] * extra, level=0.9)
    assert weighted.method == "wilson-kish" or events == 0 or extra == 0
    assert weighted.low <= (weighted.share or 0.0) <= weighted.high
    assert weighted.reviewed == n


def test_missed_fraud_share_uses_only_reviewed_blind_samples() -> None:
    def lot(flagged: bool, blind: bool, outcome: str | None) -> AuditOutcome:
        return AuditOutcome(
            period="2026-11",
            site="s",
            flagged=flagged,
            blind_sample=blind,
            audit_rate=0.02 if blind else None,
            outcome=outcome,
        )

    lots = [lot(False, True, "fraud"), lot(False, True, "genuine"), lot(False, True, None), lot(False, False, None)]
    lots += [lot(True, False, "genuine"), lot(True, False, "fraud"), lot(True, False, "fraud")]
    result = estimate(lots, period="2026-11", site="s", level=0.9)
    assert (result.blind_samples, result.blind_reviewed, result.missed_fraud.events) == (3, 2, 1)
    assert result.false_alarm.share == pytest.approx(1 / 3)
    assert result.unflagged_lots == 4


def test_refresh_is_due_for_a_season_the_reference_lacks_or_thin_cells() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    reference = [ReferenceLotAge(species="w", variety="a", season=2025, added_at=now - timedelta(days=30))] * 5
    reference += [ReferenceLotAge(species="w", variety="b", season=2026, added_at=now - timedelta(days=30))] * 5
    declared = [DeclaredLot(species="w", variety="a", season=2026, thin_cell=False)] * 10
    declared += [DeclaredLot(species="w", variety="b", season=2026, thin_cell=i < 9) for i in range(10)]
    rows = {r.variety: r for r in reference_staleness(reference, declared, now=now)}
    assert rows["a"].refresh_due and "2026 harvest" in rows["a"].reasons[0]
    assert rows["b"].refresh_due and "thin reference cells" in rows["b"].reasons[0]
    fresh = reference_staleness(reference, declared[:0], now=now)
    assert not any(r.refresh_due for r in fresh)
