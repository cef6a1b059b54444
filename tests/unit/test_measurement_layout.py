"""The measurement block's layout, the calibration strata it defines, and the per-phone scale of sizes."""

from __future__ import annotations

import numpy as np

from grainproof.measurement_layout import (
    CARD_MEASUREMENTS,
    MEASURED_WITH_CARD,
    MEASURED_WITHOUT_CARD,
    MEASUREMENT_NAMES,
    NETWORK_ONLY,
    SIZE_MEASUREMENTS,
    TRAY_COLOUR_MEASUREMENTS,
    combine_photo_measurements,
    fill_missing_measurements,
    measured_means,
    measurement_strata,
    missing_measurements,
)
from grainproof.reference.phone_scale import apply_phone_scale, fit_phone_scale
from grainproof.reference.space import fit_reduced_space

WIDTH = len(MEASUREMENT_NAMES)
CARD = len(CARD_MEASUREMENTS)
SIZE = slice(WIDTH - len(SIZE_MEASUREMENTS), WIDTH)


def _block(card: bool, rng: np.random.Generator, size: float = 2.0) -> np.ndarray:
    block = rng.normal(0.5, 0.1, WIDTH)
    block[SIZE] = size + rng.normal(0, 0.01, len(SIZE_MEASUREMENTS))
    if not card:
        block[:CARD] = 0.0
    return block


def test_a_vector_tells_its_capture_mode_by_which_groups_are_zero() -> None:
    rng = np.random.default_rng(0)
    vectors = np.vstack([_block(True, rng), _block(False, rng), np.zeros(WIDTH)])
    vectors = np.hstack([vectors, rng.normal(size=(3, 5))])  # the network's features follow
    assert measurement_strata(vectors, WIDTH).tolist() == [MEASURED_WITH_CARD, MEASURED_WITHOUT_CARD, NETWORK_ONLY]
    # A block of another width (vectors embedded before the no-card path) is one group that needs the card.
    legacy = np.vstack([rng.normal(size=8), np.zeros(8)])
    assert measurement_strata(legacy, 8).tolist() == [MEASURED_WITH_CARD, NETWORK_ONLY]


def test_missing_groups_take_the_mean_of_the_lots_that_measured_them() -> None:
    rng = np.random.default_rng(1)
    vectors = np.vstack([_block(True, rng) for _ in range(4)] + [_block(False, rng), np.zeros(WIDTH)])
    fill = measured_means(vectors, WIDTH)
    np.testing.assert_allclose(fill[:CARD], vectors[:4, :CARD].mean(axis=0))
    np.testing.assert_allclose(fill[CARD:], vectors[:5, CARD:].mean(axis=0))
    filled = fill_missing_measurements(vectors, fill)
    np.testing.assert_allclose(filled[4, :CARD], fill[:CARD])  # no card: the card's columns filled ...
    np.testing.assert_allclose(filled[4, CARD:], vectors[4, CARD:])  # ... its own measurements kept
    np.testing.assert_allclose(filled[5], fill)
    np.testing.assert_allclose(filled[:4], vectors[:4])


def test_the_reduced_space_calibrates_each_capture_mode_apart_and_fills_what_is_missing() -> None:
    rng = np.random.default_rng(2)
    vectors = np.vstack([_block(i % 3 != 0, rng) for i in range(30)])
    vectors = np.hstack([vectors, rng.normal(size=(30, 6))])
    space = fit_reduced_space(vectors, blocks=(1,) * WIDTH + (6,), measured=WIDTH)
    strata = space.calibration_strata(vectors)
    assert set(strata.tolist()) == {MEASURED_WITH_CARD, MEASURED_WITHOUT_CARD}
    # A lot without the card lands where it would with the reference mean in the card's columns.
    no_card = vectors[0].copy()
    assert strata[0] == MEASURED_WITHOUT_CARD
    with_mean = no_card.copy()
    with_mean[:CARD] = space.measured_fill[:CARD]
    np.testing.assert_allclose(space.transform(no_card[None]), space.transform(with_mean[None]))


def test_a_lot_combines_each_group_over_the_photos_that_measured_it() -> None:
    rng = np.random.default_rng(3)
    card, no_card, nothing = _block(True, rng, 2.0), _block(False, rng, 2.3), np.zeros(WIDTH)
    lot = combine_photo_measurements(np.vstack([card, no_card, nothing]))
    np.testing.assert_allclose(lot[:CARD], card[:CARD])
    np.testing.assert_allclose(lot[CARD : SIZE.start], (card[CARD : SIZE.start] + no_card[CARD : SIZE.start]) / 2)
    np.testing.assert_allclose(lot[SIZE], card[SIZE])  # the card's sizes, not a nominal scale's
    assert not combine_photo_measurements(np.vstack([nothing, nothing])).any()


def _phone_world(rng: np.random.Generator) -> tuple[np.ndarray, list[str], list[str], list[str], dict[str, float]]:
    """Lots without the card: two varieties, 12 cells, five phones each off by its own log scale."""
    offsets = {"a": 0.0, "b": 0.12, "c": -0.08, "d": 0.05, "e": -0.15}
    vectors, phones, varieties, cells = [], [], [], []
    for cell in range(12):
        variety = "big" if cell % 2 else "small"
        true_size = (2.0 if variety == "big" else 1.6) + rng.normal(0, 0.03)
        for phone, offset in offsets.items():
            vectors.append(_block(False, rng, true_size + offset))
            phones.append(phone)
            varieties.append(variety)
            cells.append(f"{variety}|{cell}")
    return np.vstack(vectors), phones, varieties, cells, offsets


def test_each_phone_s_size_scale_is_learned_from_lots_of_shared_cells() -> None:
    vectors, phones, varieties, cells, offsets = _phone_world(np.random.default_rng(4))
    scale = fit_phone_scale(vectors, phones, varieties, cells=cells, measured=WIDTH)
    learned = np.array([scale.offsets[p] for p in sorted(offsets)])
    truth = np.array([offsets[p] for p in sorted(offsets)])
    np.testing.assert_allclose(learned - learned.mean(), truth - truth.mean(), atol=0.01)
    scaled, seen = apply_phone_scale(vectors, phones, varieties, scale)
    assert seen.all()
    # On one scale, a cell's lots agree across phones to their own noise (0.01), not the phones' 0.27 spread.
    per_cell = [np.ptp(scaled[[i for i, c in enumerate(cells) if c == cell], SIZE.start]) for cell in set(cells)]
    assert max(per_cell) < 0.05


def test_an_unseen_phone_takes_its_variety_s_typical_size_and_is_reported() -> None:
    vectors, phones, varieties, cells, _ = _phone_world(np.random.default_rng(5))
    scale = fit_phone_scale(vectors, phones, varieties, cells=cells, measured=WIDTH)
    rng = np.random.default_rng(6)
    claims = np.vstack([_block(False, rng, 2.5), _block(True, rng, 2.5), np.zeros(WIDTH)])
    scaled, seen = apply_phone_scale(claims, ["new-phone"] * 3, ["big"] * 3, scale)
    assert seen.tolist() == [False, True, True]  # the card lot has its scale; the unmeasured one has no sizes
    np.testing.assert_allclose(scaled[0, SIZE], scale.typical["big"])
    np.testing.assert_allclose(scaled[0, : SIZE.start], claims[0, : SIZE.start])
    np.testing.assert_allclose(scaled[1:], claims[1:])


def test_the_phone_scale_survives_its_json_form() -> None:
    from grainproof.reference.phone_scale import PhoneScale

    vectors, phones, varieties, cells, _ = _phone_world(np.random.default_rng(7))
    scale = fit_phone_scale(vectors, phones, varieties, cells=cells, measured=WIDTH)
    assert PhoneScale.from_json(scale.as_json()) == scale


def test_colour_against_the_tray_is_its_own_group_a_lot_can_lack() -> None:
    # Without the card on a black or coloured tray the kernels' shapes and shares are measured but not their
    # colour relative to the tray: that group alone takes the reference mean, the lot stays "without the card".
    rng = np.random.default_rng(4)
    colour = [MEASUREMENT_NAMES.index(name) for name in TRAY_COLOUR_MEASUREMENTS]
    assert colour == list(range(colour[0], colour[0] + len(colour)))  # one contiguous group
    vectors = np.vstack([_block(False, rng) for _ in range(5)])
    vectors[0, colour] = 0.0
    assert measurement_strata(vectors, WIDTH).tolist() == [MEASURED_WITHOUT_CARD] * 5
    missing = missing_measurements(vectors, WIDTH)
    assert missing[0, colour].all() and not missing[0, CARD : colour[0]].any() and not missing[0, SIZE].any()
    fill = measured_means(vectors, WIDTH)
    np.testing.assert_allclose(fill[colour], vectors[1:, colour].mean(axis=0))
    filled = fill_missing_measurements(vectors, fill)
    np.testing.assert_allclose(filled[0, colour], fill[colour])
    np.testing.assert_allclose(filled[0, CARD : colour[0]], vectors[0, CARD : colour[0]])
    # A lot with one photo on a white tray and one on a black tray takes the white tray's colours.
    lot = combine_photo_measurements(vectors[:2])
    np.testing.assert_allclose(lot[colour], vectors[1, colour])
