"""The verdict policy: one reading of the scores, so a verdict never contradicts itself or its flag."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.domain import Alternative, VarietyAlternative
from grainproof.scoring.mixture import ShareEstimate, mixture_share
from grainproof.scoring.plausibility import ClaimScore
from grainproof.scoring.verdict import make_verdict

probability = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def claim_scores(draw: st.DrawFn) -> ClaimScore:
    calibration_lots = draw(st.integers(0, 400))
    min_p = 1.0 / (calibration_lots + 1)
    p = draw(st.floats(min_p, 1.0)) if calibration_lots else 1.0
    dated = draw(st.booleans())
    alternatives = tuple(
        Alternative(origin_unit=f"R{i}", season=2024 if dated else None, probability=draw(probability), p_value=q)
        for i, q in enumerate(draw(st.lists(st.floats(min_p, 1.0), max_size=5)))
    )
    share = draw(st.none() | st.tuples(probability, probability, probability))
    variety_p = draw(st.none() | probability)
    checks_p = draw(st.none() | probability) if variety_p is not None and calibration_lots else None
    foreign_draw = draw(st.none() | st.tuples(probability, probability, probability))
    foreign = None
    if foreign_draw is not None:
        low_f, mid_f, high_f = sorted(foreign_draw)
        foreign = ShareEstimate(share=mid_f, low=low_f, high=high_f, p_value=draw(probability), units=10)
    admixture = None
    if share is not None:
        low, mid, high = sorted(share)
        admixture = ShareEstimate(share=mid, low=low, high=high, p_value=draw(probability), units=12)
    return ClaimScore(
        plausibility=p,
        origin_plausibility=draw(st.floats(p, 1.0)),
        season_plausibility=draw(st.floats(p, 1.0)) if dated else None,
        nonconformity=0.0,
        declared_variety="arborio",
        declared_origin="R9",
        declared_season=2024 if dated else None,
        declared_probability=draw(probability),
        alternatives=alternatives,
        outside_reference_p=draw(st.floats(min_p, 1.0)),
        admixture=admixture,
        admixture_source=("R1", 2024) if admixture is not None else None,
        variety_plausibility=variety_p,
        variety_calibration_lots=100 if variety_p is not None else 0,
        variety_alternatives=tuple(
            VarietyAlternative(variety=f"v{i}", probability=draw(probability), p_value=q)
            for i, q in enumerate(draw(st.lists(probability, max_size=3)))
        ),
        checks_plausibility=checks_p,
        foreign_kernels=foreign,
        nearest_reference_lots=(),
        calibration_lots=calibration_lots,
        min_reachable_p=min_p,
        low_confidence=draw(st.booleans()),
        thin_reference=draw(st.booleans()),
        measured=draw(st.booleans()),
        warnings=(),
    )


@given(score=claim_scores(), alpha=st.sampled_from([0.001, 0.01, 0.05, 0.1]))
def test_a_verdicts_reasons_and_numbers_never_contradict_its_flag(score: ClaimScore, alpha: float) -> None:
    verdict = make_verdict(score, lot_id="L", alpha=alpha, model_version="v")
    text = " ".join(verdict.reasons)
    assert verdict.flagged == (verdict.status == "flagged") == bool(verdict.flagged_checks)
    # Each check flags exactly when its own number says so and, with two checks, their smaller p-value is as rare
    # as alpha among genuine lots too; and says why.
    together = score.checks_plausibility is None or score.checks_plausibility <= alpha
    origin_low = score.calibration_lots > 0 and score.plausibility <= alpha
    variety_low = score.variety_plausibility is not None and score.variety_plausibility <= alpha
    assert ("origin_season" in verdict.flagged_checks) == (origin_low and together)
    assert ("variety" in verdict.flagged_checks) == (variety_low and together) == ("as declared (p=" in text)
    # The variety is compared at the declared origin and season: a variety flag says so, and warns when the origin
    # check doubts that origin too (a false origin alone can make a true variety look wrong).
    assert ("variety" in verdict.flagged_checks) == ("Compared at the declared origin" in text)
    both = {"variety", "origin_season"} <= set(verdict.flagged_checks)
    assert both == ("which the origin check doubts too" in text)
    assert verdict.checks_plausibility == score.checks_plausibility
    # A check low on its own but held back by the two together says so, and only then.
    if "but does not flag" in text:
        assert (origin_low or variety_low) and not together
        assert verdict.status == "plausible" or "purity" in verdict.flagged_checks
    if "fits its origin and season" in text:
        assert score.plausibility > alpha
    impure = verdict.purity_interval is not None and verdict.purity_interval[1] < 0.9
    assert ("purity" in verdict.flagged_checks) == impure == ("purity is below" in text)
    if verdict.purity is not None:
        assert verdict.purity_interval is not None
        assert verdict.purity_interval[0] <= verdict.purity <= verdict.purity_interval[1]
    # "plausible" only when the reference could have flagged it and did not.
    assert ("is plausible" in text or "is not flagged at alpha" in text) == (verdict.status == "plausible")
    if "is not flagged at alpha" in text:
        assert "but does not flag" in text
    if "is plausible" in text:
        assert score.plausibility > alpha >= score.min_reachable_p
        assert not variety_low
    if "cannot be flagged" in text:
        assert verdict.status == "cannot_flag" and verdict.low_confidence and score.min_reachable_p > alpha
    if verdict.status == "uncalibrated":
        assert "cannot be judged" in text and verdict.low_confidence and not verdict.flagged
    # A named better fit is itself plausible, and better than the declaration.
    if "far better than" in text:
        named = [a for a in score.alternatives if f"fit {a.origin_unit}" in text]
        assert named and all(a.p_value > alpha >= score.plausibility for a in named)
    # "Outside every reference" only on a flagged verdict that names no better fit, at a significant p-value.
    assert verdict.outside_reference == ("fit no reference origin" in text)
    if verdict.outside_reference:
        assert verdict.flagged and "far better than" not in text and score.outside_reference_p <= alpha
    # An admixture share is shown only when significant, with its interval around it.
    if verdict.admixture is not None:
        assert score.admixture is not None and score.admixture.p_value <= alpha
        assert verdict.admixture_interval is not None
        low, high = verdict.admixture_interval
        assert low <= verdict.admixture <= high
        assert "possible admixture" in text
    else:
        assert "possible admixture" not in text


#: A plain score of one declaration with nothing remarkable: tests change what they are about with `replace`.
_PLAIN = ClaimScore(
    plausibility=0.5,
    origin_plausibility=0.5,
    season_plausibility=None,
    nonconformity=1.0,
    declared_variety="apache",
    declared_origin="51",
    declared_season=None,
    declared_probability=0.2,
    alternatives=(),
    outside_reference_p=0.5,
    admixture=None,
    admixture_source=None,
    variety_plausibility=None,
    variety_calibration_lots=0,
    variety_alternatives=(),
    checks_plausibility=None,
    foreign_kernels=None,
    nearest_reference_lots=(),
    calibration_lots=200,
    min_reachable_p=1 / 201,
    low_confidence=False,
    thin_reference=False,
    measured=True,
    warnings=(),
)


def test_a_reference_too_small_to_reach_alpha_never_says_plausible() -> None:
    score = replace(
        _PLAIN,
        plausibility=1 / 32,
        origin_plausibility=1 / 32,
        outside_reference_p=1 / 32,
        calibration_lots=31,
        min_reachable_p=1 / 32,
    )
    verdict = make_verdict(score, lot_id="L", alpha=0.01, model_version="v")
    assert verdict.status == "cannot_flag" and verdict.low_confidence and not verdict.flagged
    assert "cannot be flagged at alpha=0.01: only 31 reference lots" in verdict.reasons[0]
    assert not any("plausible" in reason for reason in verdict.reasons)


@given(
    own=st.lists(st.floats(-3, 3), min_size=2, max_size=40),
    foreign=st.lists(st.floats(-3, 3), min_size=0, max_size=40),
)
def test_purity_lies_in_the_unit_interval_and_adding_foreign_units_never_raises_it(
    own: list[float], foreign: list[float]
) -> None:
    # Units as log-likelihood ratios other/own: "own" units favour the declared component, foreign ones the other.
    own_units = -np.abs(np.asarray(own)) - 0.1
    foreign_units = np.abs(np.asarray(foreign)) + 0.1
    before = mixture_share(np.zeros(len(own_units)), own_units)
    after = mixture_share(np.zeros(len(own_units) + len(foreign_units)), np.r_[own_units, foreign_units])
    for estimate in (before, after):
        assert 0.0 <= estimate.low <= estimate.share <= estimate.high <= 1.0
    # A lot of units that all look like its own kind: the share of others' interval contains 0 (purity 1).
    assert before.low == 0.0 and before.share == 0.0
    assert after.share >= before.share


def test_admixture_share_and_interval_cover_a_known_blend() -> None:
    rng = np.random.default_rng(4)
    units = np.r_[rng.normal(0.0, 0.2, 70), rng.normal(1.0, 0.2, 30)]
    estimate = mixture_share(-0.5 * units**2 / 0.04, -0.5 * (units - 1.0) ** 2 / 0.04)
    assert estimate.low <= 0.3 <= estimate.high and estimate.share == pytest.approx(0.3, abs=0.08)
    assert estimate.p_value < 1e-6


def test_units_repeated_from_one_photo_weigh_as_that_photo_alone() -> None:
    """Ten patches cut from each of four photos are four observations, not forty: told so, the share's
    interval is the one the four photos give, not ten times narrower."""
    rng = np.random.default_rng(4)
    own, other = rng.normal(-1.0, 1.0, 4), rng.normal(-1.5, 1.0, 4)
    alone = mixture_share(own, other)
    repeated = mixture_share(np.repeat(own, 10), np.repeat(other, 10), independent=4)
    counted = mixture_share(np.repeat(own, 10), np.repeat(other, 10))
    assert (repeated.low, repeated.high) == (alone.low, alone.high)
    assert counted.high - counted.low < repeated.high - repeated.low


def test_a_held_back_origin_check_is_never_called_above_alpha_when_purity_flags() -> None:
    # Origin p 0.04 at alpha 0.05, held back by the two checks together (0.07), while purity flags the lot.
    score = replace(
        _PLAIN,
        plausibility=0.04,
        origin_plausibility=0.04,
        variety_plausibility=0.6,
        variety_calibration_lots=200,
        checks_plausibility=0.07,
        foreign_kernels=ShareEstimate(share=0.4, low=0.3, high=0.5, p_value=0.001, units=20),
    )
    verdict = make_verdict(score, lot_id="L", alpha=0.05, model_version="v", min_purity=0.9)
    assert verdict.flagged_checks == ("purity",)
    assert "above alpha" not in verdict.reasons[0] and "but does not flag" in verdict.reasons[0]
    assert "is not flagged" not in " ".join(verdict.reasons)  # it is flagged, for purity
    assert "its origin and season (p=0.04)" in verdict.reasons[0]
