"""Photo checks and tray preprocessing (numpy/Pillow only; no network is loaded here)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from grainproof.embed.photos import (
    STRIDE,
    cell_weights,
    correct_light,
    kernel_mask,
    open_photo,
    prepare_photo,
    working_canvas,
)
from grainproof.errors import PhotoError
from synthetic_trays import jpeg_bytes, tray_photo


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty file"),
        (b"this is not a photo at all", "not a readable image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "not a readable image"),
    ],
    ids=["empty", "not-an-image", "jpeg-magic-then-garbage"],
)
def test_unusable_files_raise_photo_error_naming_the_file(data: bytes, expected: str) -> None:
    with pytest.raises(PhotoError, match=expected) as info:
        prepare_photo(data, "lot7_photo2.jpg")
    assert "lot7_photo2.jpg" in str(info.value)


def test_truncated_jpeg_is_reported_as_corrupt() -> None:
    data = jpeg_bytes(tray_photo())
    with pytest.raises(PhotoError, match="corrupt or truncated") as info:
        prepare_photo(data[: len(data) // 2], "cut.jpg")
    assert "cut.jpg" in str(info.value)


def test_tiny_photo_is_refused_with_the_minimum_side() -> None:
    with pytest.raises(PhotoError, match="at least 64 pixels") as info:
        prepare_photo(jpeg_bytes(np.full((40, 300, 3), 0.5)), "thumb.jpg")
    assert "thumb.jpg" in str(info.value)


def test_enormous_photo_is_refused_from_its_header_before_decoding() -> None:
    # A 1-bit 9000x6000 PNG is 54 megapixels yet a tiny file: decoding it would cost ~160 MB of RGB.
    buffer = io.BytesIO()
    Image.new("1", (9000, 6000)).save(buffer, format="PNG")
    with pytest.raises(PhotoError, match="54 megapixels") as info:
        prepare_photo(buffer.getvalue(), "huge.png")
    assert "huge.png" in str(info.value)


def test_decompression_bomb_is_refused_even_with_a_generous_limit() -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # 400 MP: Pillow's bomb guard trips
    with pytest.raises(PhotoError, match=r"too large|megapixels"):
        prepare_photo(buffer.getvalue(), "bomb.png", max_pixels=10**12)


def test_exif_orientation_is_applied() -> None:
    pixels = tray_photo(width=400, height=300)
    pixels[:40, :40] = (1.0, 0.0, 0.0)  # a red corner marks "top left" as the camera saw it
    exif = Image.Exif()
    exif[0x0112] = 6  # the phone was held upright: viewers rotate 90 degrees clockwise
    image = open_photo(jpeg_bytes(pixels, exif=exif), "upright.jpg", min_side=64, max_pixels=10**8)
    assert image.size == (300, 400)
    upright = np.asarray(image, dtype=np.float32) / 255
    assert upright[:30, -30:, 0].mean() > 0.8 and upright[:30, -30:, 1].mean() < 0.3


def test_canvas_is_landscape_at_working_scale_and_a_multiple_of_the_stride() -> None:
    for size in [(4000, 3000), (3000, 4000), (1920, 1080), (250, 250), (700, 500)]:
        canvas = working_canvas(Image.new("RGB", size))
        height, width = canvas.shape[:2]
        assert height % STRIDE == 0 and width % STRIDE == 0
        assert width >= height
        assert height <= 448


def test_phone_resolution_does_not_change_the_canvas() -> None:
    pixels = tray_photo(width=1600, height=1200)
    big = Image.fromarray((pixels * 255).astype(np.uint8))
    small = big.resize((1000, 750), Image.Resampling.LANCZOS)
    a, b = working_canvas(big), working_canvas(small)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.02


def test_kernel_mask_finds_kernels_and_not_the_tray() -> None:
    pixels = tray_photo(card=False)  # the segmentation used when no card is found
    mask, tray = kernel_mask(pixels)
    truth = np.abs(pixels - np.asarray([0.8, 0.8, 0.78])).sum(axis=-1) > 0.1
    assert np.allclose(tray, [0.8, 0.8, 0.78], atol=0.01)
    assert (mask == truth).mean() > 0.99


def test_white_patch_on_the_tray_removes_the_colour_and_strength_of_the_light() -> None:
    neutral = tray_photo(seed=3)
    warm_dim = tray_photo(seed=3, gains=(0.9, 0.78, 0.66))
    corrected = []
    for pixels in (neutral, warm_dim):
        mask, tray = kernel_mask(pixels)
        corrected.append(correct_light(pixels, tray)[mask].mean(axis=0))
    assert np.allclose(corrected[0], corrected[1], atol=0.01)
    # Without the correction the kernels' colours differ a lot.
    assert np.abs(neutral.mean(axis=(0, 1)) - warm_dim.mean(axis=(0, 1))).max() > 0.2


def test_cell_weights_are_kernel_shares_per_cell() -> None:
    mask = np.zeros((64, 96), dtype=bool)
    mask[:32, :32] = True
    mask[32:, 64:80] = True
    weights = cell_weights(mask)
    assert weights.shape == (2, 3)
    assert np.allclose(weights, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]])


def test_sharp_well_lit_tray_has_no_warnings() -> None:
    assert prepare_photo(jpeg_bytes(tray_photo()), "good.jpg").warnings == ()


def test_blurry_photo_gets_a_warning_not_an_error() -> None:
    image = Image.fromarray((tray_photo() * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    prepared = prepare_photo(buffer.getvalue(), "shaky.jpg")
    assert any("blurry" in w and "shaky.jpg" in w for w in prepared.warnings)


def test_dark_photo_gets_a_warning() -> None:
    prepared = prepare_photo(jpeg_bytes(tray_photo() * 0.08), "cellar.jpg")
    assert any("too dark" in w and "cellar.jpg" in w for w in prepared.warnings)


def test_tray_is_painted_black_so_tray_colour_does_not_reach_the_network() -> None:
    white = prepare_photo(jpeg_bytes(tray_photo(seed=5, tray=(0.8, 0.8, 0.78))), "white.jpg")
    steel = prepare_photo(jpeg_bytes(tray_photo(seed=5, tray=(0.42, 0.43, 0.45))), "steel.jpg")
    background = white.pixels.sum(axis=-1) == 0
    assert background.mean() > 0.6
    assert steel.pixels[background].mean() < 0.05


def test_same_bytes_give_the_same_prepared_photo() -> None:
    data = jpeg_bytes(tray_photo(seed=9))
    a, b = prepare_photo(data, "a.jpg"), prepare_photo(data, "b.jpg")
    assert a.content_hash == b.content_hash
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.cell_weights, b.cell_weights)


def test_shadow_band_across_the_tray_is_not_taken_for_kernels() -> None:
    pixels = tray_photo(seed=4, card=False)
    height, width = pixels.shape[:2]
    shade = np.ones((height, width, 1), dtype=np.float32)
    shade[:, width // 2 :] = 0.7  # the operator's shadow over the right half of the tray
    shade *= np.linspace(0.85, 1.0, height, dtype=np.float32)[:, None, None]  # and some vignetting
    mask, _ = kernel_mask(working_canvas(Image.fromarray((pixels * shade * 255).astype(np.uint8))))
    truth_canvas = working_canvas(Image.fromarray((pixels * 255).astype(np.uint8)))
    truth = np.abs(truth_canvas - np.asarray([0.8, 0.8, 0.78])).sum(axis=-1) > 0.1
    assert (mask == truth).mean() > 0.97


def test_coloured_tray_is_not_white_balanced_against() -> None:
    wood = np.asarray([0.55, 0.36, 0.2], dtype=np.float32)
    pixels = np.full((64, 64, 3), 0.4, dtype=np.float32)
    assert np.array_equal(correct_light(pixels, wood), pixels)
    grey = np.asarray([0.3, 0.3, 0.36], dtype=np.float32)  # a dark neutral tray under slightly blue light
    level = float(grey @ np.asarray([0.299, 0.587, 0.114]))
    balanced = correct_light(pixels, grey)
    assert np.allclose(balanced[0, 0], 0.4 * level / grey, atol=1e-4)  # neutral at the tray's own level


def test_kernels_the_colour_of_the_tray_give_a_warning_and_use_the_whole_photo() -> None:
    pixels = tray_photo(seed=6, tray=(0.62, 0.42, 0.22))  # kernels exactly the tray's colour: invisible
    prepared = prepare_photo(jpeg_bytes(pixels), "camouflage.jpg")
    assert any("stand out from the tray" in w and "camouflage.jpg" in w for w in prepared.warnings)
    assert np.all(prepared.cell_weights == 1.0)
