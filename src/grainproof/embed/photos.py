"""From photo bytes to the network's input: checks, orientation, colour constancy, tray removal, canvas.

Numpy and Pillow only. A tray photo shows tens of kernels on a tray whose colour and texture depend on the
intake, under light that depends on the hour, taken by phones of every resolution. We:

1. refuse files that are not usable photos (each error names the file and says what to do),
2. apply the EXIF orientation and decode large JPEGs at reduced scale (DCT scaling: fast and deterministic),
3. bring the short side to a fixed working size so every phone resolution gives the same kernel scale,
4. find the tray background from the photo's border and separate kernels from it,
5. with the calibration card in the photo (grainproof.card, calibration.py): resample the sample area onto a
   fixed millimetre grid and turn it into reflectance (the card's patches, the tray's own evenness), so sizes
   are in mm and colours do not depend on the phone or the light; without the card, correct the light's colour
   (and strength) with a white patch on the tray when the tray looks neutral, and warn,
6. paint the tray black, so the vector describes the kernels and not the tray or the framing,
7. weight each feature-map cell by how much kernel it sees (photo vector = kernel-weighted average).
"""

from __future__ import annotations

import hashlib
import io
import warnings as py_warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from grainproof.errors import PhotoError

if TYPE_CHECKING:
    from grainproof.embed.calibration import CardFix

#: Bump when anything below changes the pixels the network sees: it is part of the cache key.
PREPROCESS_VERSION = "card-v7"

#: Working short side (px) for photos larger than this; smaller photos keep their size (at least MIN_SIDE).
WORKING_SHORT_SIDE = 448
MIN_WORKING_SIDE = 224
#: The widest canvas we keep (long/short); wider photos are centre-cropped, trimming tray edges, not kernels.
MAX_ASPECT = 4 / 3
#: The network's output stride: canvases are multiples of it so feature-map cells tile the canvas exactly.
STRIDE = 32

#: Quality thresholds, measured on the real rice photos and simulated trays (see docs/embedding.md).
BLUR_THRESHOLD = 3.0e-4
DARK_THRESHOLD = 0.12

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Window (in 8-px cells) over which the tray's local colour is averaged: about two kernel lengths.
_BACKGROUND_WINDOW = 11
#: Below this share of kernel pixels the tray and the kernels are not separable (or the tray is empty).
_MIN_KERNEL_SHARE = 0.03
#: Least colour distance (RGB in [0, 1]) between a kernel pixel and the tray.
_MIN_KERNEL_CONTRAST = 0.08
#: White patch: a tray whose brightest channel is at most this ratio of its darkest looks neutral under some light
#: (sRGB values: a white tray under 2700 K light after the phone's white balance stays under 1.4; wood is ~1.5+).
_NEUTRAL_TRAY_RATIO = 1.4
#: Trays darker than this carry too little light to measure its colour (the rice photos' black is ~0.02).
_MEASURABLE_TRAY = 0.1
#: Trays at least this light also set the exposure: they are brought to _TRAY_TARGET.
_LIGHT_TRAY = 0.5
_TRAY_TARGET = 0.6
#: The tray is then painted black, as on the real rice photos (kNN accuracy there: 0.96 on black, 0.94 on grey).
_TRAY_FILL = 0.0


#: Field of view (mm) the protocol's framing gives across a photo's long side: the scale assumed when no
#: card is seen (kernel sizes are then only roughly in mm).
NOMINAL_FIELD_OF_VIEW_MM = 125.0


@dataclass(frozen=True, slots=True)
class KernelView:
    """The sample area in linear light, with its scale and which of its pixels are kernels.

    `calibrated` is True when the card set the scale and colours (reflectance, mm). Otherwise
    (`plain_tray.plain_tray_view`) colours are the photo's own, the gamma undone and balanced on the tray, and
    `px_per_mm` is the kernels' own scale (a typical kernel's width); `size_factor` turns sizes at that scale
    into mm at the photo's nominal scale. `tray` is the bare tray's colour in the view's colour space;
    `colour_reference` says whether colours relative to it are the kernels' own (with the card, or a neutral
    tray), else they are not measured; `tray_lit` whether the tray shows the light (so the view is balanced
    on it), not a background that returns none (a lab's black).
    """

    reflectance: np.ndarray  # (h, w, 3) float32, linear
    kernel_mask: np.ndarray  # (h, w) bool
    px_per_mm: float
    calibrated: bool
    tray: np.ndarray  # (3,) float32
    size_factor: float = 1.0
    colour_reference: bool = True
    tray_lit: bool = True


@dataclass(frozen=True, slots=True)
class PreparedPhoto:
    """A photo ready for the network: canvas in [0, 1] (h, w, 3) and each feature-map cell's kernel share.

    `kernels` is the same sample in reflectance and mm, for measuring the kernels one by one.
    """

    pixels: np.ndarray
    cell_weights: np.ndarray
    content_hash: str
    warnings: tuple[str, ...]
    kernels: KernelView


def content_hash(data: bytes) -> str:
    """The sha256 of a photo file's bytes: the identity of a photo in the cache and the store."""
    return hashlib.sha256(data).hexdigest()


def open_photo(data: bytes, name: str, *, min_side: int, max_pixels: int) -> Image.Image:
    """The photo decoded as RGB, upright (EXIF orientation) and near the working size; PhotoError if unusable."""
    if not data:
        raise PhotoError(f"Photo {name} is an empty file; take or upload the photo again.")
    try:
        with py_warnings.catch_warnings():
            py_warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size  # read from the header, before any pixel is decoded
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise PhotoError(f"{name} is not a readable image (expected a JPEG or PNG photo of a tray).") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise PhotoError(f"Photo {name} is too large to process safely; send a photo under 50 megapixels.") from None
    if width * height > max_pixels:
        raise PhotoError(
            f"Photo {name} is {width}x{height} ({width * height / 1e6:.0f} megapixels), more than the "
            f"{max_pixels / 1e6:.0f} megapixels accepted; send a smaller photo."
        )
    if min(width, height) < min_side:
        raise PhotoError(
            f"Photo {name} is only {width}x{height} pixels; photos need at least {min_side} pixels on each side. "
            "Take the photo with the phone's camera at normal resolution."
        )
    try:
        short = min(width, height)
        if image.format == "JPEG" and short > 2 * WORKING_SHORT_SIDE:
            # Decode at 1/2, 1/4 or 1/8 scale, never below twice the working size, so resizing stays antialiased.
            scale = short / (2 * WORKING_SHORT_SIDE)
            image.draft("RGB", (int(width / scale), int(height / scale)))
        ImageOps.exif_transpose(image, in_place=True)  # no copy when upright already
        if image.mode != "RGB":
            image = image.convert("RGB")
        image.load()
    except Exception:  # any failure to decode (bad EXIF, truncated data, bomb) means the file is unusable
        raise PhotoError(f"Photo {name} is corrupt or truncated; take or upload the photo again.") from None
    return image


def working_canvas(image: Image.Image) -> np.ndarray:
    """The photo at the working scale, landscape, centre-cropped to a multiple of the stride: float32 in [0, 1]."""
    if image.height > image.width:
        # Kernels lie in every direction on a tray, so turning a portrait photo loses nothing and lets it batch.
        image = image.transpose(Image.Transpose.ROTATE_90)
    width, height = image.size
    short = max(MIN_WORKING_SIDE, min(WORKING_SHORT_SIDE, height))
    if short != height:
        new_width = max(short, round(width * short / height))
        image = image.resize((new_width, short), Image.Resampling.BILINEAR, reducing_gap=None)
        width, height = image.size
    crop_h = (height // STRIDE) * STRIDE
    crop_w = (min(width, round(crop_h * MAX_ASPECT)) // STRIDE) * STRIDE
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    image = image.crop((left, top, left + crop_w, top + crop_h))
    return np.asarray(image, dtype=np.float32) / 255.0


def luminance(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32), dtype=np.float32)


def quality_warnings(pixels: np.ndarray, name: str) -> tuple[str, ...]:
    """Warnings a user should see before trusting a verdict: photo blurry (variance of Laplacian) or too dark."""
    grey = luminance(pixels)
    found: list[str] = []
    # Brightest 2%: a dark tray is fine as long as the kernels on it are lit.
    if float(np.percentile(grey, 98)) < DARK_THRESHOLD:
        found.append(f"{name}: photo is too dark; retake it with more light.")
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    if float(laplacian.var()) < BLUR_THRESHOLD:
        found.append(f"{name}: photo looks blurry; hold the phone still and let it focus, then retake it.")
    return tuple(found)


def _border(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    band = max(2, min(height, width) // 25)
    return np.concatenate(
        [
            pixels[:band].reshape(-1, 3),
            pixels[-band:].reshape(-1, 3),
            pixels[band:-band, :band].reshape(-1, 3),
            pixels[band:-band, -band:].reshape(-1, 3),
        ]
    )


def _otsu_threshold(values: np.ndarray) -> float:
    """The threshold that best splits values in two groups (Otsu), on a 256-bin histogram."""
    histogram, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def _colour_distance(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Distance from the background with colour differences counted twice: a lit kernel on a grey tray
    can match its brightness but not its hue."""
    diff = pixels - background
    lum = diff @ _LUMA
    chroma = diff - lum[..., None]
    return np.asarray(np.sqrt(lum**2 + 4.0 * (chroma**2).sum(axis=-1)), dtype=np.float32)


def _split(distance: np.ndarray) -> np.ndarray:
    return np.asarray(distance > max(_otsu_threshold(distance), _MIN_KERNEL_CONTRAST))


def _local_background(small: np.ndarray, kernels: np.ndarray, tray: np.ndarray) -> np.ndarray:
    """The tray's colour around each pixel, averaged over tray pixels only (follows vignetting and shadows)."""
    from scipy.ndimage import uniform_filter

    tray_weight = (~kernels).astype(np.float32)
    total = uniform_filter(tray_weight, size=_BACKGROUND_WINDOW, mode="nearest")
    summed = uniform_filter(small * tray_weight[..., None], size=(_BACKGROUND_WINDOW, _BACKGROUND_WINDOW, 1))
    background = np.where(total[..., None] > 0.05, summed / np.maximum(total, 1e-6)[..., None], tray)
    return np.asarray(background, dtype=np.float32)


def tray_background(small: np.ndarray, tray: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the tray's colour around each cell, which cells hold kernels) of a photo shrunk to cells (each pixel of
    `small` the mean of a block of the photo; 56 cells on the short side follow a tray's shading well).

    The tray colour starts as `tray`, by default the median of the photo's border; the background is then
    re-estimated locally from tray cells only (twice), so a shadow band or vignetting is not taken for kernels.
    """
    tray = np.median(_border(small), axis=0).astype(np.float32) if tray is None else tray
    kernels = _split(_colour_distance(small, tray))
    for _ in range(2):
        background = _local_background(small, kernels, tray)
        kernels = _split(_colour_distance(small, background))
    return background, kernels


def kernel_mask(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of kernel pixels, tray colour), against a tray background estimated around each place
    (`tray_background`). Thin tray texture (wood grain, grid lines) is removed by a morphological opening.
    """
    from scipy.ndimage import binary_opening, gaussian_filter

    height, width = pixels.shape[:2]
    tray = np.median(_border(pixels), axis=0).astype(np.float32)
    background, kernels = tray_background(pixels.reshape(height // 8, 8, width // 8, 8, 3).mean(axis=(1, 3)), tray)
    full_background = background.repeat(8, axis=0).repeat(8, axis=1)  # smooth already: no need to interpolate
    distance = gaussian_filter(_colour_distance(pixels, full_background), sigma=1.0)
    mask = binary_opening(_split(distance), structure=np.ones((3, 3), dtype=bool), iterations=2)
    tray_colour = np.median(background[~kernels], axis=0) if (~kernels).any() else tray
    return np.asarray(mask, dtype=bool), np.asarray(tray_colour, dtype=np.float32)


def correct_light(pixels: np.ndarray, tray: np.ndarray) -> np.ndarray:
    """White patch on the tray: gains that make a neutral tray grey (light colour) and a light tray one level.

    Only what the tray can tell is corrected. A tray that looks neutral (white, grey, steel, black plastic)
    under some light gives the light's colour: its channels are equalised. A light tray also gives the light's
    strength: it is brought to a fixed level (kernels are darker than it, so nothing clips). A coloured tray
    (wood, blue) or a black background (the rice photos) cannot separate the light from the tray's own colour
    and is left as it is; the learned device and lighting correction (invariance.py) handles what remains.
    """
    level = float(tray @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    gains = np.ones(3, dtype=np.float32)
    neutral = level >= _MEASURABLE_TRAY and float(tray.max() / max(float(tray.min()), 1e-3)) <= _NEUTRAL_TRAY_RATIO
    if neutral:
        gains = level / np.maximum(tray, 1e-3)
        if level >= _LIGHT_TRAY:
            gains = gains * (_TRAY_TARGET / level)
    return np.clip(pixels * gains.astype(np.float32), 0.0, 1.0)


def cell_weights(mask: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Share of kernel pixels in each stride x stride cell: how much each feature-map cell describes kernels."""
    height, width = mask.shape
    cells = mask.reshape(height // stride, stride, width // stride, stride)
    return np.asarray(cells.mean(axis=(1, 3)), dtype=np.float32)


def prepare_photo(
    data: bytes,
    name: str,
    *,
    min_side: int = 64,
    max_pixels: int = 50_000_000,
    use_card: bool = True,
    capture_distance_mm: float | None = None,
) -> PreparedPhoto:
    """A photo file's bytes as a network-ready canvas with its kernel weights and quality warnings.

    `use_card=False` ignores the calibration card even where it is seen (a baseline for benchmarks).
    Without the card, kernels are measured against the plain tray (`plain_tray`); `capture_distance_mm`, the
    protocol's fixed distance, lets the EXIF focal length give their nominal scale.
    """
    from grainproof.embed.calibration import find_card
    from grainproof.embed.plain_tray import plain_tray_view

    image = open_photo(data, name, min_side=min_side, max_pixels=max_pixels)
    canvas = working_canvas(image)
    warnings = quality_warnings(canvas, name)
    upright = np.asarray(image, dtype=np.float32) / 255.0
    fix = find_card(upright) if use_card else None
    if fix is not None:
        view = calibrated_view(upright, fix)
        return _prepared(view.reflectance, view.kernel_mask, data, name, warnings, view)
    warnings = (
        *warnings,
        f"{name}: no calibration card found, so colours and sizes are not calibrated (kernels are measured "
        "against the tray instead); lay the grainproof card along the top of the tray, both markers in the frame.",
    )
    mask, tray = kernel_mask(canvas)
    corrected = correct_light(canvas, tray)
    view = plain_tray_view(image, field_of_view_mm=NOMINAL_FIELD_OF_VIEW_MM, capture_distance_mm=capture_distance_mm)
    return _prepared(corrected, mask, data, name, warnings, view)


def calibrated_view(upright: np.ndarray, fix: CardFix) -> KernelView:
    """The photo's sample area in reflectance, light falloff removed, with its kernel mask."""
    from grainproof.embed.calibration import flatten_light, kernel_pixels, to_card_frame
    from grainproof.embed.plain_tray import NEUTRAL_TRAY_RATIO

    frame = to_card_frame(upright, fix)
    ring = frame.tray_ring()
    # Kernels by colour alone first (lit and shaded tray differ in level), to read the falloff off the tray.
    seen = frame.off_card()
    objects = kernel_pixels(frame.linear, seen, ring, by_level=False, px_per_mm=frame.px_per_mm)
    flattened, _ = flatten_light(frame, objects)
    mask = frame.sample(kernel_pixels(flattened, seen, ring, px_per_mm=frame.px_per_mm))
    reflectance = frame.sample(flattened)
    bare = reflectance[::4, ::4][~_near(mask, round(frame.px_per_mm))[::4, ::4]]
    tray = np.median(bare, axis=0) if len(bare) else np.median(frame.linear[frame.tray_ring()], axis=0)
    if float(tray.max()) > NEUTRAL_TRAY_RATIO * max(float(tray.min()), 1e-6):
        tray = np.full(3, tray.mean())  # a coloured tray's own hue is not a reference for the kernels' colour
    return KernelView(
        reflectance=reflectance,
        kernel_mask=mask,
        px_per_mm=frame.px_per_mm,
        calibrated=True,
        tray=np.asarray(tray, dtype=np.float32),
    )


def _near(mask: np.ndarray, margin_px: int) -> np.ndarray:
    """Pixels within `margin_px` of the mask (kernels and their drop shadows)."""
    import cv2

    side = 2 * max(1, margin_px) + 1
    return np.asarray(cv2.dilate(mask.astype(np.uint8), np.ones((side, side), np.uint8)) > 0)


def _prepared(
    image: np.ndarray,
    mask: np.ndarray,
    data: bytes,
    name: str,
    warnings: tuple[str, ...],
    view: KernelView,
) -> PreparedPhoto:
    """Tray painted black and cells weighted by kernel share; the whole canvas when kernels are not found."""
    from grainproof.embed.calibration import display_from_reflectance

    pixels = display_from_reflectance(image) if view.calibrated else image
    if float(mask.mean()) < _MIN_KERNEL_SHARE:
        # Kernels cannot be told from the tray (same colour, or an empty tray): embed the whole photo instead.
        warnings = (
            *warnings,
            f"{name}: kernels barely stand out from the tray; use a plain tray of a contrasting colour.",
        )
        weights = np.ones((pixels.shape[0] // STRIDE, pixels.shape[1] // STRIDE), dtype=np.float32)
    else:
        pixels = pixels.copy()
        pixels[~mask] = _TRAY_FILL
        weights = cell_weights(mask)
    return PreparedPhoto(
        pixels=pixels, cell_weights=weights, content_hash=content_hash(data), warnings=warnings, kernels=view
    )
