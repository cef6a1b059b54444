"""The simulator's pure parts: latent traits, kernels, phones and lighting (no geography, tiny images)."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageOps

from grainproof.errors import GrainproofError
from grainproof.simulate import WorldConfig
from grainproof.simulate import traits as trait_model
from grainproof.simulate.devices import (
    EXIF_MAKE,
    EXIF_MODEL,
    EXIF_ORIENTATION,
    PHONE_PROFILES,
    Lighting,
    capture,
    encode_jpeg,
    get_phone,
    illuminant_rgb,
    sample_lighting,
)
from grainproof.simulate.photos import render_photo
from grainproof.simulate.render import CHAFF, GRAIN, TRAYS, draw_kernels, get_tray, lot_kernels, render_tray
from grainproof.simulate.varieties import VARIETIES, get_variety, varieties_of

MARNE = (4.24, 48.95)


def test_each_species_has_at_least_four_varieties() -> None:
    for species in ("barley", "soft_wheat"):
        assert len(varieties_of(species)) >= 4


def test_unknown_variety_error_lists_the_known_ones() -> None:
    with pytest.raises(GrainproofError, match="aurelio"):
        get_variety("soft_wheat", "nope")


def test_nature_does_not_depend_on_anything_but_its_seed() -> None:
    lon, lat = np.array([MARNE[0]]), np.array([MARNE[1]])
    first = trait_model.Nature(2024).environment(lon, lat, ["51"], np.array([2024]))
    again = trait_model.Nature(2024).environment(lon, lat, ["51"], np.array([2024]))
    other = trait_model.Nature(2025).environment(lon, lat, ["51"], np.array([2024]))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_provenance_field_is_smooth_near_points_differ_less_than_far_ones() -> None:
    nature = trait_model.Nature(2024)
    rng = np.random.default_rng(0)
    lon = rng.uniform(-1.0, 5.0, 400)
    lat = rng.uniform(44.0, 50.0, 400)
    here = nature.provenance(lon, lat) / trait_model.PROVENANCE_SD
    near = nature.provenance(lon + 0.5, lat) / trait_model.PROVENANCE_SD  # ~38 km east
    far = nature.provenance(lon + 5.0, lat) / trait_model.PROVENANCE_SD  # ~380 km east
    assert np.linalg.norm(here - near, axis=1).mean() < 0.5 * np.linalg.norm(here - far, axis=1).mean()


def test_provenance_is_small_next_to_the_differences_between_varieties() -> None:
    lengths = np.log([v.length_mm for v in varieties_of("soft_wheat")])
    colours = np.log([v.colour[0] for v in varieties_of("soft_wheat")])
    # One SD of the whole provenance field is less than the spread between varieties...
    assert trait_model.PROVENANCE_SD[0] < lengths.std()
    assert trait_model.PROVENANCE_SD[2] < colours.std()
    # ...and the within-place spread (field, lot) is a fraction of it, so origin is learnable.
    assert trait_model.LOT_SHARE < trait_model.FIELD_SHARE < 0.5


@given(arrays(np.float64, 8, elements=st.floats(-3.0, 3.0)))
def test_traits_are_physical_for_any_latent_shift(z: np.ndarray) -> None:
    for variety in (VARIETIES[0], VARIETIES[-1]):
        traits = trait_model.traits_from_latent(variety, z)
        assert traits[0] > 0 and traits[1] > 0 and traits[2] > 0
        assert np.all((traits[4:] > 0) & (traits[4:] < 1))


def test_barley_is_harvested_before_wheat_and_the_north_later() -> None:
    rng = np.random.default_rng(0)
    lat = np.array([44.0] * 200 + [50.0] * 200)
    barley = trait_model.harvest_day_of_year(np.array(["barley"] * 400), lat, np.zeros(400), rng)
    wheat = trait_model.harvest_day_of_year(np.array(["soft_wheat"] * 400), lat, np.zeros(400), rng)
    assert barley.mean() < wheat.mean()
    assert wheat[200:].mean() > wheat[:200].mean()


def _traits(z: np.ndarray | None = None, variety: int = 0) -> np.ndarray:
    return trait_model.traits_from_latent(VARIETIES[variety], np.zeros(8) if z is None else z)


def test_lot_kernels_hold_the_requested_count_and_some_impurities() -> None:
    z = np.zeros(8)
    z[7] = 2.0  # ~18 % impurities
    kernels = lot_kernels(_traits(z), VARIETIES[0], 120, np.random.default_rng(0))
    assert len(kernels) == 120
    assert 0 < np.sum(kernels.kind != GRAIN) < 60
    assert np.all(kernels.length[kernels.kind == GRAIN] > 3.0)


def test_admixed_kernels_carry_the_other_lots_traits() -> None:
    main = _traits()
    other = main.copy()
    other[0] *= 1.5  # much longer kernels from elsewhere
    rng = np.random.default_rng(1)
    pure = lot_kernels(main, VARIETIES[0], 120, rng)
    mixed = lot_kernels(main, VARIETIES[0], 120, rng, admixture_traits=other, admixture_share=0.5)
    grains_pure = pure.length[pure.kind == GRAIN]
    grains_mixed = mixed.length[mixed.kind == GRAIN]
    assert np.mean(grains_mixed > main[0] * 1.25) > 0.3
    assert np.mean(grains_pure > main[0] * 1.25) < 0.05


def test_there_are_twelve_or_more_distinct_phone_profiles() -> None:
    assert len(PHONE_PROFILES) >= 12
    assert len({(p.make, p.model) for p in PHONE_PROFILES}) == len(PHONE_PROFILES)
    assert len({p.long_side for p in PHONE_PROFILES}) >= 3
    assert len({p.jpeg_quality for p in PHONE_PROFILES}) >= 5


def test_warm_bulb_light_is_redder_than_daylight() -> None:
    warm, daylight = illuminant_rgb(2700), illuminant_rgb(6500)
    assert warm[0] / warm[2] > 2 * daylight[0] / daylight[2]
    assert warm[1] == pytest.approx(1.0) and daylight[1] == pytest.approx(1.0)


def test_lighting_covers_2700_to_6500_kelvin() -> None:
    rng = np.random.default_rng(0)
    temperatures = [sample_lighting(rng).temperature_k for _ in range(300)]
    assert 2700 <= min(temperatures) < 3000 and 6200 < max(temperatures) <= 6500


def test_photo_size_follows_the_phone_and_the_cap() -> None:
    phone = get_phone("galaxy-a52")
    lighting = sample_lighting(np.random.default_rng(0))
    pixels = render_photo(_traits(), "soft_wheat", "aurelio", phone, lighting, TRAYS[0], np.random.default_rng(0))
    assert pixels.shape == (600, 800, 3) and pixels.dtype == np.uint8
    small = render_photo(
        _traits(), "soft_wheat", "aurelio", phone, lighting, TRAYS[0], np.random.default_rng(0), max_side=200
    )
    assert small.shape == (150, 200, 3)


def test_same_seed_renders_the_same_photo() -> None:
    phone = get_phone("moto-g22")
    lighting = sample_lighting(np.random.default_rng(3))
    a, b = (
        render_photo(_traits(), "barley", "etoile", phone, lighting, TRAYS[3], np.random.default_rng(9), max_side=160)
        for _ in range(2)
    )
    np.testing.assert_array_equal(a, b)


def test_jpeg_carries_make_model_and_an_orientation_that_turns_it_upright() -> None:
    upright = np.zeros((30, 40, 3), dtype=np.uint8)
    upright[:5, :, 0] = 255  # a red band at the top of the tray
    for phone in (get_phone("iphone-11"), get_phone("galaxy-a52")):
        image = Image.open(io.BytesIO(encode_jpeg(upright, phone)))
        exif = image.getexif()
        assert exif[EXIF_MAKE] == phone.make and exif[EXIF_MODEL] == phone.model
        assert exif[EXIF_ORIENTATION] == phone.orientation
        shown = np.asarray(ImageOps.exif_transpose(image))
        assert shown.shape == (30, 40, 3)
        assert shown[:5, :, 0].mean() > 200 and shown[-5:, :, 0].mean() < 60


def test_dim_light_is_noisier_than_bright_light() -> None:
    phone = get_phone("nokia-g21")
    flat = np.full((64, 64, 3), 0.4, dtype=np.float32)
    lighting = sample_lighting(np.random.default_rng(0))
    bright = capture(flat, phone, lighting.__class__(**{**_asdict(lighting), "intensity": 2.0, "vignetting": 0.0,
                                                        "shadow_strength": 0.0}), np.random.default_rng(0))  # fmt: skip
    dim = capture(flat, phone, lighting.__class__(**{**_asdict(lighting), "intensity": 0.2, "vignetting": 0.0,
                                                     "shadow_strength": 0.0}), np.random.default_rng(0))  # fmt: skip

    def relative_noise(pixels: np.ndarray) -> float:
        values = pixels.reshape(-1, 3).astype(float)
        return float((values.std(axis=0) / values.mean(axis=0)).mean())

    assert relative_noise(dim) > 1.5 * relative_noise(bright)


def _asdict(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}  # type: ignore[attr-defined]


def test_phones_move_the_same_lots_colours_in_different_directions() -> None:
    lighting = sample_lighting(np.random.default_rng(1))
    means = [
        render_photo(_traits(), "soft_wheat", "aurelio", p, lighting, get_tray("white_plastic"),
                     np.random.default_rng(5), max_side=128).reshape(-1, 3).mean(axis=0)
        for p in PHONE_PROFILES
    ]  # fmt: skip
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(means, 2)]
    assert min(distances) > 1.0  # no two phones render the same lot identically


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lots": 0}, "--lots"),
        ({"devices": ("iphone-99",)}, "iphone-99"),
        ({"fraud_rate": 1.5}, "--fraud-rate"),
        ({"seasons": (2999,)}, "2999"),
        ({"seasons": (2024,), "fraud_kinds": ("wrong_season",)}, "two seasons"),
        ({"regions": ("51", "08")}, "both referenced and unreferenced"),
        ({"fraud_kinds": ("stolen",)}, "stolen"),
        ({"regions": ("51",), "fraud_kinds": ("far_origin",)}, "two or more referenced regions"),
        ({"max_photo_side": 10}, "--max-side"),
    ],
)
def test_bad_world_settings_are_explained(changes: dict[str, object], message: str) -> None:
    with pytest.raises(GrainproofError, match=message):
        WorldConfig(**{"lots": 10, **changes})  # type: ignore[arg-type]


def test_a_single_season_world_skips_wrong_season_claims() -> None:
    config = WorldConfig(lots=10, seasons=(2024,))
    assert "wrong_season" not in config.active_fraud_kinds
    assert "missing_origin" in config.active_fraud_kinds
    assert "missing_origin" not in WorldConfig(lots=10, unreferenced_regions=()).active_fraud_kinds
    assert WorldConfig(lots=10, regions=("51",)).active_fraud_kinds == (
        "missing_origin",
        "wrong_season",
        "variety_swap",
        "variety_admixture",
    )


def test_kernels_cut_with_another_variety_take_its_shape_and_colour() -> None:
    own, other = get_variety("barley", "etoile"), get_variety("barley", "hermine")
    kernels = lot_kernels(
        _traits(), own, 400, np.random.default_rng(4), admixture_traits=_traits(), admixture_share=0.3,
        admixture_variety=other,
    )  # fmt: skip
    grains = kernels.kind == GRAIN
    foreign = np.isclose(kernels.taper[grains], other.tip_taper)
    assert 0.2 < foreign.mean() < 0.4
    assert np.allclose(kernels.veins[grains][foreign], other.husk_veins)
    assert np.allclose(kernels.taper[grains][~foreign], own.tip_taper)
    # The same draw without another variety: every grain keeps the lot's own outline.
    plain = lot_kernels(_traits(), own, 400, np.random.default_rng(4), admixture_traits=_traits(), admixture_share=0.3)
    assert np.allclose(plain.taper[plain.kind == GRAIN], own.tip_taper)


def test_trays_have_distinct_looks() -> None:
    assert len({t.texture for t in TRAYS}) >= 3 and len(TRAYS) >= 4
    assert CHAFF != GRAIN


def test_kernels_brightness_against_the_tray_does_not_follow_the_lights_elevation() -> None:
    variety = get_variety("soft_wheat", "aurelio")
    kernels = lot_kernels(_traits(), variety, 40, np.random.default_rng(2))
    ratios = []
    for elevation in (35.0, 80.0):
        e = np.radians(elevation)
        light = Lighting(
            temperature_k=5000, intensity=1.0, vignetting=0.0, shadow_strength=0.0, shadow_angle=0.0,
            light_direction=(float(np.cos(e)), 0.0, float(np.sin(e))),
        )  # fmt: skip
        tray = render_tray(get_tray("white_plastic"), 240, 320, 2.6, np.random.default_rng(1))
        scene = draw_kernels(tray.copy(), kernels, 2.6, light.light_direction, np.random.default_rng(3))
        on_kernel = scene[..., 0] - scene[..., 2] > 0.1  # yellow-brown kernels on a near-white tray
        ratios.append(scene[on_kernel].mean() / np.median(scene))  # kernels cover a few % of the tray
    # A low light dims tray and kernels alike; what is left is the domes' sides turned to a low light (~5 %).
    # With only the kernels shaded the ratio moved by ~23 %, three times the lots' lightness spread (~8 %).
    assert abs(np.log(ratios[0] / ratios[1])) < 0.08
