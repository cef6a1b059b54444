"""Properties of the scoring core: bounds, invariances, calibration, monotonicity, thin cells, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.domain import Claim, Origin
from grainproof.errors import ClaimError, ModelError, UnknownVarietyError
from grainproof.reference import ReferenceModel, fit_reference_model
from grainproof.reference.calibration import score_declarations, score_lots
from grainproof.scoring import benjamini_hochberg, conformal_p_value
from grainproof.scoring.plausibility import score_claim
from grainproof.scoring.synthetic import gaussian_world
from grainproof.scoring.verdict import make_verdict

WORLD = gaussian_world(dim=8, varieties=2, origins=5, seasons=3, origin_scale=0.8, season_scale=0.6, seed=7)


@pytest.fixture(scope="module")
def model() -> ReferenceModel:
    return fit_reference_model(WORLD.lots(600, seed=1), seed=0)


def _score(
    model: ReferenceModel,
    vector: np.ndarray,
    *,
    variety: str = "variety0",
    origin: str = "R00",
    season: int | None = 2023,
    units: np.ndarray | None = None,
):
    return score_claim(
        model,
        species="soft_wheat",
        variety=variety,
        origin_unit=origin,
        season=season,
        vector=vector,
        unit_vectors=units,
    )


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


@given(
    vector=st.lists(finite, min_size=8, max_size=8),
    origin=st.sampled_from(["R00", "R03", "R99"]),
    season=st.sampled_from([2023, 2025, 2030, None]),
)
def test_every_plausibility_lies_in_the_unit_interval(
    model: ReferenceModel, vector: list[float], origin: str, season: int | None
) -> None:
    score = _score(model, np.asarray(vector), origin=origin, season=season)
    values = [score.plausibility, score.origin_plausibility, score.outside_reference_p]
    values += [a.p_value for a in score.alternatives] + [a.probability for a in score.alternatives]
    if score.season_plausibility is not None:
        values.append(score.season_plausibility)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert score.admixture is None or 0.0 <= score.admixture.low <= score.admixture.share <= score.admixture.high <= 1.0
    verdict = make_verdict(score, lot_id="x", alpha=0.01, model_version=model.version)
    assert verdict.flagged == (verdict.plausibility <= 0.01) and verdict.reasons


@given(seed=st.integers(0, 10_000))
def test_scores_do_not_depend_on_the_order_of_photos(model: ReferenceModel, seed: int) -> None:
    rng = np.random.default_rng(seed)
    units = WORLD.cell_mean(0, 1, 0) + rng.normal(0, 1, (12, 8))
    vector = units.mean(axis=0)
    a = _score(model, vector, origin="R01", units=units)
    b = _score(model, vector, origin="R01", units=units[rng.permutation(12)])
    assert a.admixture == b.admixture
    assert a.plausibility == b.plausibility and a.alternatives == b.alternatives


def test_the_same_input_gives_the_same_output(model: ReferenceModel) -> None:
    lot = WORLD.lots(1, seed=3)[0]
    vector = np.asarray(lot.features)
    assert _score(model, vector) == _score(model, vector)
    again = fit_reference_model(WORLD.lots(600, seed=1), seed=0)
    assert again.version == model.version and _score(again, vector) == _score(model, vector)


@pytest.mark.slow
def test_p_values_are_uniform_on_genuine_lots() -> None:
    reference = WORLD.lots(2000, seed=21, prefix="r")
    big = fit_reference_model(reference, seed=0)
    genuine = WORLD.lots(3000, seed=2, prefix="g")
    p = np.array(
        [
            _score(
                big,
                np.asarray(lot.features),
                variety=lot.claim.variety,
                origin=lot.claim.origin.region or "",
                season=lot.claim.season,
            ).plausibility
            for lot in genuine
        ]
    )
    for alpha in (0.01, 0.05, 0.2):
        # Sampling error has two parts: the test lots, and the calibration lots this one model was built with
        # (conformal validity holds on average over reference sets; one set is off by ~sqrt(a(1-a)/n_cal)).
        spread = np.sqrt(alpha * (1 - alpha))
        tolerance = 3 * spread / np.sqrt(len(p)) + 3 * spread / np.sqrt(len(reference))
        assert abs(np.mean(p <= alpha) - alpha) <= tolerance


def test_claims_of_a_neighbouring_origin_are_flagged_far_more_than_alpha(model: ReferenceModel) -> None:
    lots = WORLD.lots(300, seed=4, prefix="n")
    wrong = [WORLD.origins[(WORLD.origins.index(lot.claim.origin.region) + 1) % 5] for lot in lots]
    p = np.array(
        [
            _score(
                model, np.asarray(lot.features), variety=lot.claim.variety, origin=o, season=lot.claim.season
            ).plausibility
            for lot, o in zip(lots, wrong, strict=True)
        ]
    )
    assert np.mean(p <= 0.05) > 0.5


@given(
    start=st.lists(st.floats(-6, 6), min_size=4, max_size=4), steps=st.lists(st.floats(0, 1), min_size=2, max_size=6)
)
def test_moving_toward_the_declared_centre_never_lowers_origin_plausibility(
    start: list[float], steps: list[float]
) -> None:
    single = _single_gaussian_model()
    centre = _SINGLE_CENTRE
    origin = np.asarray(start) + centre
    previous = -1.0
    for t in sorted(steps):
        vector = origin + t * (centre - origin)
        p = score_claim(
            single, species="soft_wheat", variety="variety0", origin_unit="R00", season=2023, vector=vector
        ).origin_plausibility
        assert p >= previous - 1e-12
        previous = p


_SINGLE_WORLD = gaussian_world(dim=4, varieties=1, origins=1, seasons=1, seed=2)
_SINGLE_CENTRE = _SINGLE_WORLD.cell_mean(0, 0, 0)
_SINGLE: list[ReferenceModel] = []


def _single_gaussian_model() -> ReferenceModel:
    if not _SINGLE:
        _SINGLE.append(fit_reference_model(_SINGLE_WORLD.lots(200, seed=1), seed=0))
    return _SINGLE[0]


def test_a_cell_with_one_reference_lot_still_answers_marked_low_confidence() -> None:
    lots = WORLD.lots(300, seed=5)
    lone = replace(lots[0], claim=replace(lots[0].claim, origin=Origin(region="R77"), lot_id="lone"))
    thin_model = fit_reference_model([*lots[1:], lone], seed=0)
    score = _score(
        thin_model, np.asarray(lone.features), variety=lone.claim.variety, origin="R77", season=lone.claim.season
    )
    assert score.low_confidence and 0.0 <= score.plausibility <= 1.0


def test_a_cell_never_seen_borrows_from_its_origin_and_season(model: ReferenceModel) -> None:
    # Every (variety, origin, season) may not be populated, but origin and season are each seen elsewhere.
    score = _score(model, WORLD.cell_mean(1, 2, 1), variety="variety1", origin="R02", season=2024)
    assert score.plausibility > 0.05


def test_unknown_origin_unit_gets_an_answer_with_a_warning(model: ReferenceModel) -> None:
    score = _score(model, WORLD.cell_mean(0, 0, 0), origin="R42")
    assert score.low_confidence and any("R42" in w for w in score.warnings)


def test_a_lot_far_from_every_reference_is_outside_the_reference(model: ReferenceModel) -> None:
    far = _score(model, WORLD.cell_mean(0, 0, 0) + 40.0)
    assert far.outside_reference_p < 0.01 and far.plausibility < 0.01
    near = _score(model, WORLD.cell_mean(0, 0, 0))
    assert near.outside_reference_p > 0.2


def test_flagged_verdict_names_the_cell_that_fits_better(model: ReferenceModel) -> None:
    vector = WORLD.cell_mean(0, 3, 0)
    verdict = make_verdict(_score(model, vector, origin="R00"), lot_id="x", alpha=0.05, model_version="v")
    assert verdict.flagged
    assert "R03 2023" in verdict.reasons[0] and "far better than R00 2023" in verdict.reasons[0]
    assert verdict.alternatives[0].origin_unit == "R03"


def test_admixture_share_is_read_from_the_unit_vectors(model: ReferenceModel) -> None:
    rng = np.random.default_rng(0)
    own = WORLD.cell_mean(0, 0, 0) + rng.normal(0, 0.5, (70, 8))
    foreign = WORLD.cell_mean(0, 4, 0) + rng.normal(0, 0.5, (30, 8))
    units = np.vstack([own, foreign])
    score = _score(model, units.mean(axis=0), units=units)
    assert score.admixture is not None and score.admixture.share == pytest.approx(0.3, abs=0.12)
    assert score.admixture.low <= 0.3 <= score.admixture.high and score.admixture.p_value < 0.001
    assert score.admixture_source is not None and score.admixture_source[0] == "R04"
    pure = _score(model, own.mean(axis=0), units=own)
    assert pure.admixture is not None and pure.admixture.share < 0.15 and pure.admixture.low == 0.0
    # Without units there is no telling a blend of two origins from a lot of an origin in between.
    assert _score(model, units.mean(axis=0)).admixture is None


def test_unknown_variety_species_mismatch_wrong_dimension_and_nan_are_refused(model: ReferenceModel) -> None:
    vector = WORLD.cell_mean(0, 0, 0)
    with pytest.raises(UnknownVarietyError, match="no soft_wheat variety 'spelt'"):
        _score(model, vector, variety="spelt")
    with pytest.raises(ClaimError, match="soft_wheat variety"):
        score_claim(model, species="barley", variety="variety0", origin_unit="R00", season=2023, vector=vector)
    with pytest.raises(UnknownVarietyError, match="no species 'barley'"):
        score_claim(model, species="barley", variety="x", origin_unit="R00", season=2023, vector=vector)
    with pytest.raises(ModelError, match="has 5 features"):
        _score(model, vector[:5])
    with pytest.raises(ClaimError, match="NaN"):
        _score(model, np.full(8, np.nan))


def test_another_backbone_is_refused(model: ReferenceModel) -> None:
    from grainproof.services.verification import verify_vectors

    tagged = replace(model, backbone_id="efficientnet_lite0@abc")
    claim = Claim(lot_id="x", species="soft_wheat", variety="variety0", origin=Origin(region="R00"))
    with pytest.raises(ModelError, match="efficientnet_lite1@def"):
        verify_vectors(tagged, claim, WORLD.cell_mean(0, 0, 0), backbone_id="efficientnet_lite1@def")
    verdict = verify_vectors(tagged, claim, WORLD.cell_mean(0, 0, 0), alpha=0.05, backbone_id="efficientnet_lite0@abc")
    data = verdict.as_dict()
    for key in (
        "lot_id",
        "plausibility",
        "origin_plausibility",
        "season_plausibility",
        "flagged",
        "reasons",
        "alternatives",
        "admixture",
        "model_version",
    ):
        assert key in data
    assert data["season_plausibility"] is None  # no harvest date declared


@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=40), fdr=st.floats(0.01, 0.5))
def test_benjamini_hochberg_matches_the_step_up_rule(p: list[float], fdr: float) -> None:
    flags = benjamini_hochberg(p, fdr)
    ranked = sorted(p)
    passing = [k for k in range(1, len(p) + 1) if ranked[k - 1] <= fdr * k / len(p)]
    cut = ranked[max(passing) - 1] if passing else -1.0
    assert list(flags) == [x <= cut for x in p]


@given(
    cal=st.lists(st.floats(0, 100), min_size=1, max_size=30),
    scores=st.lists(st.floats(0, 100), min_size=2, max_size=2),
)
def test_conformal_p_value_lies_within_its_rank_step_and_falls_as_the_score_grows(
    cal: list[float], scores: list[float]
) -> None:
    ranked = np.sort(cal)
    low, high = sorted(scores)
    p_low, p_high = float(conformal_p_value(ranked, low)), float(conformal_p_value(ranked, high))
    assert p_high <= p_low  # monotone: a stranger lot is never more plausible
    for score, p in ((low, p_low), (high, p_high)):
        at_least = sum(c >= score for c in cal)
        # Never above the rank p-value, never below the next step's.
        assert at_least / (len(cal) + 1) - 1e-12 <= p <= (1 + at_least) / (len(cal) + 1) + 1e-12
    assert float(conformal_p_value(ranked, ranked[-1] + 1.0)) == pytest.approx(1 / (len(cal) + 1))


def test_a_score_between_the_two_largest_calibration_scores_can_reach_an_alpha_between_steps() -> None:
    # With 38 calibration lots the rank p-value steps from 1/39 to 2/39 = 0.051: at alpha 0.05 only a lot beyond
    # every calibration lot was flagged. Interpolated, a lot most of the way to the largest is.
    cal = np.arange(1.0, 39.0)
    assert float(conformal_p_value(cal, 37.9)) == pytest.approx((1 + 0.1) / 39)
    assert float(conformal_p_value(cal, 37.9)) <= 0.05 < 2 / 39


@pytest.mark.parametrize("law", ["normal", "exponential", "uniform"])
def test_conformal_p_values_flag_genuine_lots_at_alpha_between_steps_not_at_the_step_below(law: str) -> None:
    # 19 calibration lots: the rank p-value's steps are 0.05 apart, so at alpha 0.075 it flags genuine lots 0.05 of
    # the time. Interpolated, about alpha: a little under where the scores thin out toward the tail (normal,
    # exponential), within Monte Carlo error of it where they are spread evenly (uniform); never more.
    rng = np.random.default_rng(3)
    draws = getattr(rng, law)(size=(20_000, 20))
    p = np.array([float(conformal_p_value(np.sort(row[:19]), row[19])) for row in draws])
    rank_p = (1 + (draws[:, :19] >= draws[:, 19:]).sum(axis=1)) / 20
    for alpha in (0.075, 0.125, 0.275):
        assert np.mean(rank_p <= alpha) < alpha - 0.02
        assert alpha - 0.01 <= np.mean(p <= alpha) <= alpha + 0.006, alpha
    assert np.mean(p <= 0.025) == 0.0  # below the first step nothing is flagged: no tail is invented


@given(
    parts=st.lists(st.lists(st.integers(0, 12).map(float), max_size=12), min_size=1, max_size=4),
    scores=st.lists(st.integers(-1, 13).map(float), min_size=1, max_size=8),
)
def test_one_score_and_many_get_the_same_conformal_p_values(parts: list[list[float]], scores: list[float]) -> None:
    # Integers: ties with calibration scores are common. A claim's p-values take the scalar path, calibration lots'
    # and peers' the array path.
    from grainproof.scoring.conformal import conformal_p_values

    ranked = [np.sort(part) for part in parts]
    many = conformal_p_values(ranked, np.array(scores))
    assert [float(conformal_p_values(ranked, score)[0]) for score in scores] == pytest.approx(list(many))
    pool = np.sort(np.concatenate(ranked))
    if len(pool) > 1:
        among = conformal_p_values([pool], pool, among_them=True)
        assert [float(conformal_p_values([pool], x, among_them=True)[0]) for x in pool] == pytest.approx(list(among))


def test_a_calibration_lot_ranked_among_the_others_gets_the_p_value_a_claim_with_its_score_would() -> None:
    from grainproof.scoring.conformal import conformal_p_values

    scores = np.array([0.3, 2.0, 1.1, 5.0, 0.9, 1.7])
    ranked = np.sort(scores)
    among = conformal_p_values([ranked], scores, among_them=True)
    for k, score in enumerate(scores):
        others = np.sort(np.delete(scores, k))
        assert among[k] == pytest.approx(float(conformal_p_value(others, score)))


@given(seed=st.integers(0, 10_000))
def test_scoring_lots_together_equals_scoring_them_one_at_a_time(model: ReferenceModel, seed: int) -> None:
    # Calibration lots are scored in batches and claims one by one: the two must give the same scores.
    rng = np.random.default_rng(seed)
    ref = model.species["soft_wheat"]
    assert ref.cells is not None
    n = 6
    z = ref.space.transform(WORLD.cell_mean(0, 1, 0) + rng.normal(0, 2.0, (n, 8)))
    origins, seasons = rng.integers(0, len(ref.origins), n), rng.integers(0, len(ref.seasons), n)
    undated = rng.random(n) < 0.3
    batched = score_lots(ref.cells, z, 0, origins, seasons, undated, outside_tail=0.02)
    one_by_one = [
        score_lots(
            ref.cells, z[i : i + 1], 0, origins[i : i + 1], seasons[i : i + 1], undated[i : i + 1], outside_tail=0.02
        )[0]
        for i in range(n)
    ]
    np.testing.assert_allclose(batched, np.stack(one_by_one), rtol=1e-12, atol=1e-12)


@given(seed=st.integers(0, 10_000))
def test_a_claim_and_its_alternatives_score_as_calibration_lots_declared_that_way(
    model: ReferenceModel, seed: int
) -> None:
    # Claims are scored with all their declarations at once; calibration lots one declaration each. Validity
    # rests on both giving the same score to the same lot and declaration.
    rng = np.random.default_rng(seed)
    ref = model.species["soft_wheat"]
    assert ref.cells is not None
    z = ref.space.transform(WORLD.cell_mean(1, 2, 1) + rng.normal(0, 2.0, (1, 8)))
    m = 5
    origins, seasons = rng.integers(0, len(ref.origins), m), rng.integers(0, len(ref.seasons), m)
    undated = rng.random(m) < 0.3
    together = score_declarations(ref.cells, z, 1, origins, seasons, undated, outside_tail=0.02)
    apart = score_lots(ref.cells, np.repeat(z, m, axis=0), 1, origins, seasons, undated, outside_tail=0.02)
    np.testing.assert_allclose(together, apart, rtol=1e-12, atol=1e-12)


#: Per reference lot, 12 kernels around the lot's vector: the kernel-level variety classes purity reads.
_KERNEL_RNG = np.random.default_rng(5)
_UNIT_LOTS = WORLD.lots(300, seed=21, prefix="u")
_UNITS = {lot.lot_id: np.asarray(lot.features) + _KERNEL_RNG.normal(0, 0.5, (12, WORLD.dim)) for lot in _UNIT_LOTS}
_KERNELS_OF = {
    variety: np.vstack([_UNITS[lot.lot_id] for lot in _UNIT_LOTS if lot.claim.variety == variety])
    for variety in WORLD.varieties
}


@pytest.fixture(scope="module")
def unit_model() -> ReferenceModel:
    return fit_reference_model(_UNIT_LOTS, seed=0, units=_UNITS)


@given(units=st.lists(st.lists(finite, min_size=8, max_size=8), min_size=4, max_size=20))
def test_purity_lies_in_the_unit_interval(unit_model: ReferenceModel, units: list[list[float]]) -> None:
    kernels = np.asarray(units)
    verdict = make_verdict(
        _score(unit_model, kernels.mean(axis=0), units=kernels), lot_id="x", alpha=0.05, model_version="v"
    )
    assert verdict.purity is not None and verdict.purity_interval is not None
    low, high = verdict.purity_interval
    assert 0.0 <= low <= verdict.purity <= high <= 1.0


@given(variety=st.sampled_from(WORLD.varieties), picks=st.lists(st.integers(0, 10**6), min_size=4, max_size=30))
def test_a_lot_of_reference_kernels_of_its_variety_has_a_purity_interval_containing_one(
    unit_model: ReferenceModel, variety: str, picks: list[int]
) -> None:
    pool = _KERNELS_OF[variety]
    kernels = pool[[p % len(pool) for p in picks]]
    score = _score(unit_model, kernels.mean(axis=0), variety=variety, units=kernels)
    verdict = make_verdict(score, lot_id="x", alpha=0.05, model_version="v")
    assert verdict.purity_interval is not None and verdict.purity_interval[1] == 1.0
    assert "purity" not in verdict.flagged_checks


@given(
    own=st.lists(st.integers(0, 10**6), min_size=4, max_size=20),
    foreign=st.lists(st.integers(0, 10**6), min_size=1, max_size=20),
)
def test_adding_kernels_of_another_variety_never_raises_purity(
    unit_model: ReferenceModel, own: list[int], foreign: list[int]
) -> None:
    declared, other = _KERNELS_OF["variety0"], _KERNELS_OF["variety1"]
    before_units = declared[[p % len(declared) for p in own]]
    after_units = np.vstack([before_units, other[[p % len(other) for p in foreign]]])
    before = make_verdict(
        _score(unit_model, before_units.mean(axis=0), units=before_units), lot_id="x", alpha=0.05, model_version="v"
    )
    after = make_verdict(
        _score(unit_model, after_units.mean(axis=0), units=after_units), lot_id="x", alpha=0.05, model_version="v"
    )
    assert before.purity is not None and after.purity is not None
    assert after.purity <= before.purity
