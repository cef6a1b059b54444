"""The calibration card: found in every phone's photo, and it makes colour and size independent of phone and light."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from grainproof import card
from grainproof.embed.calibration import (
    SAMPLE_PX_PER_MM,
    find_card,
    fit_colour_response,
)
from grainproof.embed.photos import calibrated_view
from grainproof.simulate.devices import PHONE_PROFILES, Lighting, get_phone
from grainproof.simulate.photos import render_photo
from grainproof.simulate.render import get_tray
from grainproof.simulate.traits import traits_from_latent
from grainproof.simulate.varieties import get_variety

_VARIETY = get_variety("soft_wheat", "aurelio")
_TRAITS = traits_from_latent(_VARIETY, np.zeros(8))
_BENCH_LIGHT = dict(
    temperature_k=4500.0, intensity=1.0, vignetting=0.0, shadow_strength=0.0, shadow_angle=0.0,
    light_direction=(0.0, 0.5, 0.866),
)  # fmt: skip


def _photo(phone: str, tray: str, seed: int = 5, **light: object) -> np.ndarray:
    lighting = Lighting(**{**_BENCH_LIGHT, **light})  # type: ignore[arg-type]
    pixels = render_photo(_TRAITS, "soft_wheat", "aurelio", get_phone(phone), lighting, get_tray(tray),
                          np.random.default_rng(seed))  # fmt: skip
    return pixels.astype(np.float32) / 255.0


def _kernel_colour(pixels: np.ndarray) -> tuple[float, float, float]:
    """(log lightness, log R/B, kernel share) of the kernels' median reflectance on the calibrated canvas."""
    fix = find_card(pixels)
    assert fix is not None
    view = calibrated_view(pixels, fix)
    core = binary_erosion(view.kernel_mask, iterations=2)
    median = np.median(view.reflectance[core], axis=0)
    return float(np.log(median.mean())), float(np.log(median[0] / median[2])), float(view.kernel_mask.mean())


@pytest.mark.parametrize("phone", [p.name for p in PHONE_PROFILES])
def test_card_is_found_for_every_phone_and_gives_the_scale(phone: str) -> None:
    pixels = _photo(phone, "white_plastic")
    fix = find_card(pixels)
    assert fix is not None, phone
    assert fix.reprojection_px < 1.0
    # The simulator's scale: photo width over the field of view at the phone's zoom (give or take the
    # operator's hand, 5 % per photo).
    expected = pixels.shape[1] / (125.0 / get_phone(phone).zoom)
    assert fix.px_per_mm() == pytest.approx(expected, rel=0.15)


def test_new_phone_does_not_change_the_measured_kernel_colour() -> None:
    measured = np.array([_kernel_colour(_photo(p.name, "white_plastic")) for p in PHONE_PROFILES])
    # Between-lot spread of lightness and redness from provenance alone is 0.05 and 0.04 (traits.py); 14 phones
    # moved the raw photos' mean colours far more than that (test_simulate_nuisance.py).
    assert measured[:, 0].std() < 0.02
    assert measured[:, 1].std() < 0.02


def test_colour_of_the_light_does_not_change_the_measured_kernel_colour() -> None:
    measured = np.array([_kernel_colour(_photo("fairphone-4", "black_plastic", temperature_k=t))
                         for t in (2700.0, 4000.0, 5500.0, 6500.0)])  # fmt: skip
    assert measured[:, 0].std() < 0.015
    assert measured[:, 1].std() < 0.015


def test_vignetting_and_a_low_light_do_not_change_the_measured_kernel_colour() -> None:
    plain = _kernel_colour(_photo("iphone-13", "white_plastic"))
    vignetted = _kernel_colour(_photo("iphone-13", "white_plastic", vignetting=0.45))
    low = _kernel_colour(_photo("iphone-13", "white_plastic", light_direction=(0.0, 0.82, 0.57)))
    assert abs(vignetted[0] - plain[0]) < 0.03
    assert abs(low[0] - plain[0]) < 0.03


def test_drop_shadows_on_a_white_tray_are_not_counted_as_kernel() -> None:
    # The same kernels (same seed) under a light from above (short shadows) and a low light (shadows 1.7 mm
    # long, about a third of a kernel's area): the kernel share must not grow with the shadows.
    overhead = _kernel_colour(_photo("galaxy-s21", "white_plastic", light_direction=(0.0, 0.17, 0.985)))[2]
    low = _kernel_colour(_photo("galaxy-s21", "white_plastic", light_direction=(0.0, 0.82, 0.57)))[2]
    assert low == pytest.approx(overhead, rel=0.05)


def test_calibrated_canvas_has_a_fixed_physical_size_whatever_the_phone() -> None:
    shapes = set()
    for phone in ("moto-g22", "xperia-10"):  # 640 px at zoom 0.90, 800 px at zoom 1.20
        pixels = _photo(phone, "steel")
        fix = find_card(pixels)
        assert fix is not None
        view = calibrated_view(pixels, fix)
        shapes.add(view.reflectance.shape)
        assert view.px_per_mm == SAMPLE_PX_PER_MM
    assert shapes == {(320, 608, 3)}


def test_colour_response_recovers_a_known_camera() -> None:
    # A camera with a colour cast, channel mixing and a gamma: display = (M @ reflectance) ** (1 / 2.2).
    mixing = np.array([[1.1, 0.15, 0.0], [0.05, 0.9, 0.1], [0.0, 0.2, 0.7]])

    def camera(reflectance: np.ndarray) -> np.ndarray:
        return np.clip(reflectance @ mixing.T, 0, 1) ** (1 / 2.2)

    known = np.array([p.reflectance for p in card.PATCHES])
    response = fit_colour_response(camera(known).astype(np.float32))
    kernels = np.array([[0.5, 0.32, 0.16], [0.6, 0.45, 0.25], [0.3, 0.2, 0.1]])
    recovered = response.to_reflectance(camera(kernels).astype(np.float32))
    assert np.allclose(np.log(recovered[:, 0] / recovered[:, 2]), np.log(kernels[:, 0] / kernels[:, 2]), atol=0.05)
    assert np.allclose(recovered.mean(axis=1), kernels.mean(axis=1), rtol=0.05)


def test_photo_without_the_card_is_not_found() -> None:
    pixels = render_photo(_TRAITS, "soft_wheat", "aurelio", get_phone("pixel-6a"), Lighting(**_BENCH_LIGHT),  # type: ignore[arg-type]
                          get_tray("white_plastic"), np.random.default_rng(1), with_card=False)  # fmt: skip
    assert find_card(pixels.astype(np.float32) / 255.0) is None


def test_kernel_size_and_colour_do_not_depend_on_the_tray() -> None:
    from grainproof.embed.embedder import MEASURED_FEATURES
    from grainproof.embed.morphometrics import MORPHOMETRIC_FEATURES, photo_morphometrics

    measured = []
    for tray in ("white_plastic", "black_plastic", "blue_plastic", "steel", "grid_paper"):
        pixels = _photo("galaxy-s21", tray, seed=8)  # the same kernels (same seed) on each tray
        fix = find_card(pixels)
        assert fix is not None
        view = calibrated_view(pixels, fix)
        measured.append(photo_morphometrics(view.reflectance, view.kernel_mask, view.px_per_mm))
    values = np.array(measured)
    index = {name: MORPHOMETRIC_FEATURES.index(name) for name in MEASURED_FEATURES[:4]}
    # Between-lot SD from provenance: length 0.03, width 0.04, lightness 0.05, redness 0.04 (traits.py).
    assert values[:, index["log_length_mm"]].std() < 0.012
    assert values[:, index["log_width_mm"]].std() < 0.016
    assert values[:, index["log_lightness"]].std() < 0.02
    assert values[:, index["redness"]].std() < 0.016


def test_kernels_on_a_wood_board_are_not_measured_but_warned_about() -> None:
    from grainproof.embed.photos import prepare_photo
    from synthetic_trays import jpeg_bytes

    pixels = _photo("galaxy-s21", "wood_board", seed=8)
    prepared = prepare_photo(jpeg_bytes(pixels, quality=95), "wood.jpg")
    # The kernels have the board's hue: nothing is cut out (no measurement can be trusted), and the user is told.
    assert prepared.kernels.calibrated
    assert not prepared.kernels.kernel_mask.any()
    assert any("barely stand out" in w for w in prepared.warnings)


def test_measurement_agreement_is_a_within_variety_correlation() -> None:
    from grainproof.embed.bench import measurement_agreement

    rng = np.random.default_rng(0)
    names = ("log_length_mm", "redness")
    lots = [f"L{i}" for i in range(200)]
    varieties = {lot: ("a" if i % 2 else "b") for i, lot in enumerate(lots)}
    truth = {lot: np.array([6.0 if varieties[lot] == "a" else 8.0, rng.normal()]) for lot in lots}
    for lot in lots:
        truth[lot][0] *= np.exp(rng.normal(0, 0.03))
    # Length measured exactly; redness is noise. A variety effect alone must not make a correlation.
    features = {lot: np.array([np.log(truth[lot][0]), rng.normal()]) for lot in lots}
    figures = {
        f.feature: f.correlation
        for f in measurement_agreement(features, varieties, truth, ("length_mm", "redness"), names)
    }
    assert figures["log_length_mm"] == pytest.approx(1.0)
    assert abs(figures["redness"]) < 0.2
