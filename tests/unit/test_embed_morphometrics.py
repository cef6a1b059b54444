"""Per-kernel morphometrics on rendered trays of known traits: the features follow the lot's latent traits."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from grainproof.embed.morphometrics import (
    FALLBACK_FEATURES,
    MORPHOMETRIC_FEATURES,
    measure_kernels,
    photo_measurements,
    photo_morphometrics,
)
from grainproof.simulate.render import AMBIENT_LIGHT, draw_kernels, get_tray, lot_kernels, render_tray
from grainproof.simulate.varieties import get_variety

PX_PER_MM = 6.0
#: The calibrated canvas: 608 x 320 px at 6 px/mm (about 101 x 53 mm of tray).
HEIGHT_MM, WIDTH_MM = 320 / PX_PER_MM, 608 / PX_PER_MM
LIGHT = (0.3, 0.2, float(np.sqrt(1 - 0.3**2 - 0.2**2)))
TRAY = get_tray("black_plastic")
VARIETY = get_variety("soft_wheat", "aurelio")
#: LATENT_TRAITS order: length_mm, width_mm, lightness, redness, weathering, broken, shrivelled, impurity.
BASE = (6.6, 3.4, 1.0, 0.0, 0.10, 0.04, 0.04, 0.03)


def _with(**changes: float) -> tuple[float, ...]:
    names = ("length", "width", "lightness", "redness", "weathering", "broken", "shrivelled", "impurity")
    return tuple(changes.get(name, value) for name, value in zip(names, BASE, strict=True))


@cache
def _photo(traits: tuple[float, ...], seed: int, px_per_mm: float = PX_PER_MM) -> tuple[np.ndarray, np.ndarray]:
    """Linear reflectance of a rendered tray and its kernel mask (a threshold against the known black tray).

    The same seed draws the same kernels (positions, angles, spreads), so two lots that differ in one trait
    give a paired comparison with little sampling noise.
    """
    rng = np.random.default_rng(seed)
    height, width = round(HEIGHT_MM * px_per_mm), round(WIDTH_MM * px_per_mm)
    kernels = lot_kernels(np.asarray(traits), VARIETY, 80, rng)
    # The calibrated canvas frames the area the kernels are spread over (below the card).
    spread_centre = (kernels.centre.max(axis=0) + kernels.centre.min(axis=0)) / 2
    kernels = replace(kernels, centre=kernels.centre - spread_centre)
    canvas = render_tray(TRAY, height, width, px_per_mm, rng)
    draw_kernels(canvas, kernels, px_per_mm, LIGHT, rng)
    reflectance = canvas / np.float32(AMBIENT_LIGHT + (1 - AMBIENT_LIGHT) * LIGHT[2])
    # 0.1 above the tray is about half coverage at a kernel's shaded edge (weed seeds, nearly black, are lost).
    mask = np.abs(reflectance - np.asarray(TRAY.colour, dtype=np.float32)).max(axis=2) > 0.1
    return reflectance, mask


def _lot(traits: tuple[float, ...], seeds: tuple[int, ...] = (1, 2), px_per_mm: float = PX_PER_MM) -> dict[str, float]:
    """A lot's features: the mean of its photos' vectors, by name."""
    vectors = np.array([photo_morphometrics(*_photo(traits, seed, px_per_mm), px_per_mm) for seed in seeds])
    return dict(zip(MORPHOMETRIC_FEATURES, vectors.mean(axis=0), strict=True))


def test_photo_vector_is_finite_and_in_the_published_order() -> None:
    vector = photo_morphometrics(*_photo(BASE, 1), PX_PER_MM)
    assert MORPHOMETRIC_FEATURES == (
        "log_length_mm",
        "log_width_mm",
        "log_lightness",
        "redness",
        "weathering",
        "broken_share",
        "shrivelled_share",
        "impurity_share",
        "kernel_count",
    )
    assert vector.shape == (len(MORPHOMETRIC_FEATURES),)
    assert np.isfinite(vector).all()
    assert vector[-1] >= 20  # most of the ~55 kernels in the frame lie alone and whole


def test_sizes_come_out_in_millimetres_of_the_kernels_drawn() -> None:
    lot = _lot(BASE)
    assert np.exp(lot["log_length_mm"]) == pytest.approx(6.6, rel=0.03)
    assert np.exp(lot["log_width_mm"]) == pytest.approx(3.4, rel=0.05)


def test_a_lot_with_five_percent_longer_kernels_measures_longer() -> None:
    base, longer = _lot(BASE), _lot(_with(length=6.6 * 1.05))
    assert longer["log_length_mm"] - base["log_length_mm"] == pytest.approx(np.log(1.05), abs=0.015)
    assert longer["log_width_mm"] - base["log_width_mm"] == pytest.approx(0.0, abs=0.015)


def test_paler_and_redder_lots_measure_paler_and_redder() -> None:
    base, paler, redder = _lot(BASE), _lot(_with(lightness=1.1)), _lot(_with(redness=0.05))
    assert paler["log_lightness"] - base["log_lightness"] == pytest.approx(np.log(1.1), abs=0.03)
    # The simulator multiplies R by exp(redness) and B by exp(-redness): log(R/B) moves twice as far.
    assert redder["redness"] - base["redness"] == pytest.approx(0.10, abs=0.03)
    assert paler["redness"] == pytest.approx(base["redness"], abs=0.02)


def test_twice_the_weathering_measures_more_weathered() -> None:
    base, weathered = _lot(BASE, seeds=(1, 2, 3)), _lot(_with(weathering=0.20), seeds=(1, 2, 3))
    assert weathered["weathering"] > 1.5 * base["weathering"] > 0


def test_broken_shrivelled_and_impure_lots_measure_so() -> None:
    clean = _lot(_with(broken=0.0, shrivelled=0.0, impurity=0.0))
    assert clean["broken_share"] < 0.03
    assert clean["shrivelled_share"] < 0.03
    assert clean["impurity_share"] < 0.02
    assert _lot(_with(broken=0.25))["broken_share"] > clean["broken_share"] + 0.12
    assert _lot(_with(shrivelled=0.25))["shrivelled_share"] > clean["shrivelled_share"] + 0.12
    assert _lot(_with(impurity=0.15))["impurity_share"] > clean["impurity_share"] + 0.08


def test_a_finer_canvas_measures_the_same_millimetres() -> None:
    coarse, fine = _lot(BASE, seeds=(3,)), _lot(BASE, seeds=(3,), px_per_mm=9.0)
    assert fine["log_length_mm"] == pytest.approx(coarse["log_length_mm"], abs=0.015)
    assert fine["log_width_mm"] == pytest.approx(coarse["log_width_mm"], abs=0.03)


def test_turning_the_photo_a_quarter_turn_changes_sizes_and_colours_little() -> None:
    reflectance, mask = _photo(BASE, 4)
    upright = photo_morphometrics(reflectance, mask, PX_PER_MM)
    turned = photo_morphometrics(np.rot90(reflectance).copy(), np.rot90(mask).copy(), PX_PER_MM)
    np.testing.assert_allclose(turned[:4], upright[:4], atol=0.01)


def test_an_empty_tray_gives_the_defined_fallback() -> None:
    reflectance, _ = _photo(BASE, 1)
    empty = np.zeros(reflectance.shape[:2], dtype=bool)
    assert len(measure_kernels(reflectance, empty, PX_PER_MM)) == 0
    vector = photo_morphometrics(reflectance, empty, PX_PER_MM)
    np.testing.assert_array_equal(vector, FALLBACK_FEATURES)
    assert vector[MORPHOMETRIC_FEATURES.index("kernel_count")] == 0


def test_a_photo_on_the_fallback_does_not_drag_the_lot_mean() -> None:
    from grainproof.domain import with_measured_features
    from grainproof.embed.vectors import PhotoEmbedding, lot_embedding
    from grainproof.measurement_layout import CARD_MEASUREMENTS, MEASUREMENT_NAMES, SIZE_MEASUREMENTS

    table = measure_kernels(*_photo(BASE, 1), PX_PER_MM)
    with_card = photo_measurements(table, tray=np.asarray(TRAY.colour), calibrated=True)
    # The same kernels seen without the card, their sizes on a nominal scale 10 % off.
    without_card = photo_measurements(table, tray=np.asarray(TRAY.colour), calibrated=False, size_factor=1.1)
    assert with_card is not None and without_card is not None
    backbone = with_measured_features("net", len(MEASUREMENT_NAMES))

    def photo(values: np.ndarray, digest: str) -> PhotoEmbedding:
        vector = np.concatenate([values, [1.0, 2.0]]).astype(np.float32)
        return PhotoEmbedding(vector=vector, unit_vectors=vector[None], content_hash=digest, backbone_id=backbone)

    unmeasured = np.zeros(len(MEASUREMENT_NAMES))
    lot = lot_embedding([photo(with_card, "a"), photo(unmeasured, "b")])
    np.testing.assert_allclose(lot.vector[: len(MEASUREMENT_NAMES)], with_card, rtol=1e-6)
    # A photo without the card counts for what it measured, not as zero mm kernels; the card's sizes win.
    mixed = lot_embedding([photo(with_card, "a"), photo(without_card, "b")]).vector
    cards, sizes = len(CARD_MEASUREMENTS), len(MEASUREMENT_NAMES) - len(SIZE_MEASUREMENTS)
    np.testing.assert_allclose(mixed[:cards], with_card[:cards], rtol=1e-6)
    np.testing.assert_allclose(mixed[sizes : len(MEASUREMENT_NAMES)], with_card[sizes:], rtol=1e-6)
    assert not without_card[:cards].any() and without_card[sizes] == pytest.approx(with_card[sizes] + np.log(1.1))
    # With no photo measured, the block stays zero: the reference model reads that as "not measured".
    assert not lot_embedding([photo(unmeasured, "a"), photo(unmeasured, "b")]).vector[: len(MEASUREMENT_NAMES)].any()


def test_a_mask_of_another_size_is_refused() -> None:
    reflectance, mask = _photo(BASE, 1)
    with pytest.raises(ValueError, match="does not match"):
        measure_kernels(reflectance, mask[:-1], PX_PER_MM)


def test_specks_of_a_pixel_or_two_are_not_dark_spots() -> None:
    # A noisy, coarse phone's grain after JPEG: 2 x 2-pixel specks at half brightness over 4 % of the kernels'
    # pixels (1 % of them speckled). Real spots are 0.5 mm across and more (3+ px here); specks must not read as
    # weathering.
    weathering = MORPHOMETRIC_FEATURES.index("weathering")
    clean_lot = _with(weathering=0.02)
    reflectance, mask = _photo(clean_lot, 5)
    clean = photo_morphometrics(reflectance, mask, PX_PER_MM)[weathering]
    rng = np.random.default_rng(0)
    speckled = reflectance.copy()
    ys, xs = np.nonzero(mask)
    for i in rng.choice(len(ys), size=len(ys) // 100, replace=False):
        speckled[ys[i] : ys[i] + 2, xs[i] : xs[i] + 2] *= 0.5
    noisy = photo_morphometrics(speckled, mask, PX_PER_MM)[weathering]
    weathered = photo_morphometrics(*_photo(_with(weathering=0.5), 5), PX_PER_MM)[weathering]
    assert weathered - clean > 0.01  # real spots are still seen
    # Read without the median filter, the specks added 1.25 times what a lot weathered to 0.5 shows.
    assert noisy - clean < 0.4 * (weathered - clean)


def test_colour_against_the_tray_is_left_unmeasured_without_a_reference_and_its_hue_ignores_saturation() -> None:
    from grainproof.measurement_layout import MEASUREMENT_NAMES, TRAY_COLOUR_MEASUREMENTS

    table = measure_kernels(*_photo(BASE, 1), PX_PER_MM)
    tray = np.full(3, 0.8)
    measured = photo_measurements(table, tray=tray, calibrated=False, hue_redness=True)
    unreferenced = photo_measurements(table, tray=None, calibrated=False, hue_redness=True)
    assert measured is not None and unreferenced is not None
    colour = [MEASUREMENT_NAMES.index(name) for name in TRAY_COLOUR_MEASUREMENTS]
    assert np.all(measured[colour] != 0) and not unreferenced[colour].any()
    others = [i for i in range(len(MEASUREMENT_NAMES)) if i not in colour]
    np.testing.assert_array_equal(measured[others], unreferenced[others])
    # A phone saturating colours 1.3x about the grey axis (gamma-encoded, relative to the tray) moves the hue
    # angle by nothing but rounding; the lightness is its own column.
    encoded = (table.colour / tray) ** (1 / 2.2)
    grey = encoded.mean(axis=1, keepdims=True)
    saturated = replace(table, colour=tray * np.maximum(grey + 1.3 * (encoded - grey), 1e-6) ** 2.2)
    hue = MEASUREMENT_NAMES.index("tray_redness")
    assert photo_measurements(saturated, tray=tray, calibrated=False, hue_redness=True)[hue] == pytest.approx(
        measured[hue], abs=1e-6
    )
    # With the card colours are reflectance and the column stays log(R / B) over the tray's (on a neutral tray,
    # the card's own redness), as it does on a background that returns no light (nothing balances the colours).
    card = photo_measurements(table, tray=tray, calibrated=True)
    assert card is not None and card[hue] == pytest.approx(card[MEASUREMENT_NAMES.index("redness")], abs=1e-12)


def _phone_shrivelled_shares(shrivelled: float) -> list[float]:
    """The shrivelled share measured on photos of one wheat lot by three noisy phones (card path), three lights."""
    from grainproof.embed.embedder import measure_photo
    from grainproof.embed.photos import prepare_photo
    from grainproof.measurement_layout import MEASUREMENT_NAMES
    from grainproof.simulate.devices import encode_jpeg, get_phone, sample_lighting
    from grainproof.simulate.photos import render_photo

    column = MEASUREMENT_NAMES.index("shrivelled_share")
    shares = []
    for phone_name in ("moto-g22", "nokia-g21", "redmi-note-10"):
        phone = get_phone(phone_name)
        for seed in range(3):
            rng = np.random.default_rng(seed)
            traits = np.array([6.8, 3.6, 1.0, 0.0, 0.08, 0.03, shrivelled, 0.02])
            pixels = render_photo(
                traits, "soft_wheat", "aurelio", phone, sample_lighting(rng), get_tray("white_plastic"), rng
            )
            photo = prepare_photo(encode_jpeg(pixels, phone), "lot.jpg", min_side=64, max_pixels=50_000_000)
            shares.append(float(measure_photo(photo)[0][column]))
    return shares


def test_noisy_phones_do_not_see_shrivelled_grains_in_a_sound_lot() -> None:
    # A share of a few percent needs few false positives: with the width bar at 0.90 of the median, a sound
    # lot on these phones measured 9 % shrivelled (the wrinkle test alone kept a tenth of sound grains out).
    sound, shrivelled = _phone_shrivelled_shares(0.0), _phone_shrivelled_shares(0.06)
    assert np.mean(sound) < 0.015
    assert np.mean(shrivelled) > np.mean(sound) + 0.02
