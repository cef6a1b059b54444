"""Reading the calibration card: from a phone's pixels to reflectance on a fixed millimetre grid.

With the card found (grainproof.card), a photo is brought into the card's own frame: its two ArUco
markers give a homography from card millimetres to photo pixels, so the sample area is resampled at
a fixed `SAMPLE_PX_PER_MM` whatever the phone's resolution, zoom, distance or tilt. The card's grey
patches give each channel's response curve (light strength and colour, white balance, tone curve),
its colour patches a 3x3 matrix for the cross-channel mixing. What the card cannot see is the light
falling off across the tray (vignetting, a hand's shadow): that is read from the tray itself, whose
colour is the same everywhere, relative to the tray right around the card.

The result is linear reflectance: a kernel measures the same under a warm bulb and daylight, on an
old phone and a new one, which is what makes a lot's colour and size evidence of where it grew.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from grainproof import card
from grainproof.embed.photos import luminance

#: Resolution of the calibrated canvas (pixels per mm): about what a mid-range phone gives at zoom 1.
SAMPLE_PX_PER_MM = 6.0
#: A card fit whose markers' corners miss their predicted place by more than this (px) is not trusted.
MAX_REPROJECTION_PX = 3.0
#: Inner share of each patch that is read (away from the printed edges and the blur around them).
_PATCH_CORE = 0.6
#: Pull of the colour matrix towards the identity (keeps it defined if patches are lost); small, because a
#: stronger pull left a colour bias that followed the light (redness SD 0.035 across 2700-6500 K vs 0.006).
_MATRIX_RIDGE = 1e-3
#: Bare tray around the card, between these distances (mm) from its edge: the tray's reference colour.
_RING_MM = (1.0, 4.0)
#: Light falloff is smooth: read from bare tray in blocks of this side (mm).
_FALLOFF_BLOCK_MM = 6.0
#: A patch with a channel at or above this display value is clipped and left out of the fit.
_CLIPPED = 0.985
#: Steps of the per-channel lookup tables of the colour response.
_LUT_LEVELS = 4096
#: Display values are re-encoded for the network with this gamma (sRGB-like), after calibration.
DISPLAY_GAMMA = 2.2
#: Canvas top-left corner in card mm: the sample area's left edge, and a little above the card, so the tray
#: just above it is seen too. The canvas holds the card's rows, then the sample area.
_FRAME_TOP_MM = -6.0
_FRAME_ORIGIN_MM = (card.SAMPLE_AREA_MM[0], _FRAME_TOP_MM)


@dataclass(frozen=True, slots=True)
class CardFix:
    """Where the card lies in a photo: homography from card mm to photo px, and its fit error (px)."""

    homography: np.ndarray  # (3, 3)
    reprojection_px: float

    def px_per_mm(self) -> float:
        """Photo pixels per mm at the card (the square root of the local area scale)."""
        centre = np.asarray(card.CARD_SIZE_MM) / 2
        jacobian = _jacobian(self.homography, centre)
        return float(np.sqrt(abs(np.linalg.det(jacobian))))


def _jacobian(h: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y = point
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    return np.array(
        [
            [(h[0, 0] - u * h[2, 0]) / w, (h[0, 1] - u * h[2, 1]) / w],
            [(h[1, 0] - v * h[2, 0]) / w, (h[1, 1] - v * h[2, 1]) / w],
        ]
    )


@lru_cache(maxsize=1)
def _detector() -> Any:
    import cv2

    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, card.ARUCO_DICTIONARY))
    parameters = cv2.aruco.DetectorParameters()
    parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    return cv2.aruco.ArucoDetector(dictionary, parameters)


def detect_markers(pixels: np.ndarray) -> dict[int, np.ndarray]:
    """The ArUco markers seen in an upright photo (h, w, 3) in [0, 1]: id -> corners (4, 2) in photo px."""
    grey = np.clip(luminance(pixels) * 255.0 + 0.5, 0, 255)
    corners, ids, _ = _detector().detectMarkers(grey.astype(np.uint8))
    if ids is None:
        return {}
    return {int(i): c.reshape(4, 2) for i, c in zip(ids.ravel(), corners, strict=True)}


def find_card(pixels: np.ndarray) -> CardFix | None:
    """The card's place in an upright photo (h, w, 3) in [0, 1], or None when both markers are not seen."""
    import cv2

    found = detect_markers(pixels)
    if not all(marker.marker_id in found for marker in card.MARKERS):
        return None
    card_points = np.array([p for m in card.MARKERS for p in m.corners()], dtype=np.float64)
    photo_points = np.vstack([found[m.marker_id] for m in card.MARKERS]).astype(np.float64)
    homography, _ = cv2.findHomography(card_points, photo_points, method=0)
    if homography is None:
        return None
    projected = cv2.perspectiveTransform(card_points[None], homography)[0]
    error = float(np.sqrt(np.mean(np.sum((projected - photo_points) ** 2, axis=1))))
    if error > MAX_REPROJECTION_PX:
        return None
    return CardFix(homography=homography, reprojection_px=error)


@dataclass(frozen=True, slots=True)
class ColourResponse:
    """Display value -> linear reflectance: a monotone curve per channel, then a 3x3 mixing matrix."""

    display_knots: np.ndarray  # (k, 3) increasing per channel
    log_reflectance_knots: np.ndarray  # (k,) log reflectance of the grey patches, increasing
    matrix: np.ndarray  # (3, 3)

    def linearise(self, pixels: np.ndarray) -> np.ndarray:
        """Per-channel curve only: each channel's reflectance as if the light were grey."""
        # A lookup table per channel at 1/4096 steps (finer than any 8-bit photo) instead of interpolating
        # every pixel: the same curve, ten times faster.
        levels = np.linspace(0.0, 1.0, _LUT_LEVELS, dtype=np.float32)
        index = np.clip(pixels * (_LUT_LEVELS - 1) + 0.5, 0, _LUT_LEVELS - 1).astype(np.int32)
        out = np.empty(pixels.shape, dtype=np.float32)
        for c in range(3):
            table = np.exp(_interp_extrapolated(levels, self.display_knots[:, c], self.log_reflectance_knots))
            out[..., c] = table[index[..., c]]
        return out

    def to_reflectance(self, pixels: np.ndarray) -> np.ndarray:
        """Linear reflectance (..., 3) of display values (..., 3) in [0, 1]."""
        linear = self.linearise(pixels)
        return np.asarray(np.clip(linear @ self.matrix.T.astype(np.float32), 0.0, None), dtype=np.float32)


def _interp_extrapolated(x: np.ndarray, knots_x: np.ndarray, knots_y: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation that continues the end segments' slopes beyond the knots."""
    y = np.interp(x, knots_x, knots_y)
    low_slope = (knots_y[1] - knots_y[0]) / max(float(knots_x[1] - knots_x[0]), 1e-6)
    high_slope = (knots_y[-1] - knots_y[-2]) / max(float(knots_x[-1] - knots_x[-2]), 1e-6)
    y = np.where(x < knots_x[0], knots_y[0] + (x - knots_x[0]) * low_slope, y)
    y = np.where(x > knots_x[-1], knots_y[-1] + (x - knots_x[-1]) * high_slope, y)
    return np.asarray(y, dtype=np.float32)


def fit_colour_response(
    observed: np.ndarray, patches: tuple[card.Patch, ...] = card.PATCHES, *, light: np.ndarray | None = None
) -> ColourResponse:
    """The response that maps the patches' observed display values (n, 3) onto their printed reflectances.

    `light` (n,) is the relative light on each patch, when known: the patch then looks that much lighter.
    """
    known = np.array([p.reflectance for p in patches], dtype=np.float64)
    if light is not None:
        known = known * np.asarray(light, dtype=np.float64)[:, None]
    # A clipped patch (a light card under an exposure set for a black tray) no longer says how light it is.
    unclipped = observed.max(axis=1) < _CLIPPED
    neutral = np.array([p.neutral for p in patches]) & unclipped
    if neutral.sum() < 3:
        neutral = np.array([p.neutral for p in patches])
    greys = observed[neutral].astype(np.float64)
    order = np.argsort(known[neutral, 0])
    log_known = np.log(known[neutral, 0][order])
    log_known = np.maximum.accumulate(log_known + np.arange(len(log_known)) * 1e-6)
    knots = greys[order]
    # A response is increasing: a noisy patch must not fold the curve back.
    knots = np.maximum.accumulate(knots, axis=0) + np.arange(len(knots))[:, None] * 1e-4
    response = ColourResponse(display_knots=knots, log_reflectance_knots=log_known, matrix=np.eye(3))
    linear = response.linearise(observed[unclipped].astype(np.float32)).astype(np.float64)
    # Ridge regression of each row of the matrix towards the identity: known ~ linear @ M.T.
    gram = linear.T @ linear + _MATRIX_RIDGE * np.eye(3)
    matrix = np.linalg.solve(gram, linear.T @ known[unclipped] + _MATRIX_RIDGE * np.eye(3)).T
    return ColourResponse(display_knots=knots, log_reflectance_knots=log_known, matrix=matrix)


@dataclass(frozen=True, slots=True)
class CardFrame:
    """A photo resampled into the card's frame on a fixed mm grid: the card's rows, then the sample area."""

    display: np.ndarray  # (h, w, 3) float32 in [0, 1], the photo's own values
    linear: np.ndarray  # (h, w, 3) float32 reflectance, before the light falloff is taken out
    inside: np.ndarray  # (h, w) bool: pixels the photo covers
    sample_top: int  # first row of the sample area
    patches: np.ndarray  # (n, 3) median display value of each printed patch (card.PATCHES order)
    px_per_mm: float

    def sample(self, image: np.ndarray) -> np.ndarray:
        """The sample-area rows of a canvas-sized array."""
        return np.ascontiguousarray(image[self.sample_top :])

    def off_card(self) -> np.ndarray:
        """Canvas pixels the photo covers, the card itself left out (its paper and patches are not kernels)."""
        seen = self.inside.copy()
        seen[_card_box(self.px_per_mm, margin_mm=0.5)] = False
        return seen

    def tray_ring(self) -> np.ndarray:
        """Canvas pixels of bare tray right around the card (the protocol keeps the sample off it)."""
        height, width = self.inside.shape
        ys = (np.arange(height) + 0.5) / self.px_per_mm + _FRAME_ORIGIN_MM[1]
        xs = (np.arange(width) + 0.5) / self.px_per_mm + _FRAME_ORIGIN_MM[0]
        card_width, card_height = card.CARD_SIZE_MM
        dx = np.maximum(np.maximum(-xs, xs - card_width), 0.0)[None, :]
        dy = np.maximum(np.maximum(-ys, ys - card_height), 0.0)[:, None]
        distance = np.sqrt(dx**2 + dy**2)
        return np.asarray(self.inside & (distance >= _RING_MM[0]) & (distance <= _RING_MM[1]))


def _canvas_to_card(px_per_mm: float) -> np.ndarray:
    """Homography from canvas pixels to card mm (pixel centres at half-pixel offsets)."""
    scale = 1.0 / px_per_mm
    x0, y0 = _FRAME_ORIGIN_MM
    return np.array([[scale, 0.0, x0 + 0.5 * scale], [0.0, scale, y0 + 0.5 * scale], [0.0, 0.0, 1.0]])


def to_card_frame(pixels: np.ndarray, fix: CardFix, *, px_per_mm: float = SAMPLE_PX_PER_MM) -> CardFrame:
    """An upright photo (h, w, 3) in [0, 1] resampled into the card's frame, with its colour response fitted."""
    import cv2

    _, y0, width_mm, height_mm = card.SAMPLE_AREA_MM
    width = round(width_mm * px_per_mm)
    sample_top = round((y0 - _FRAME_TOP_MM) * px_per_mm)
    height = sample_top + round(height_mm * px_per_mm)
    to_photo = fix.homography @ _canvas_to_card(px_per_mm)
    # Resampling from a finer photo: blur first so that thin tray texture and noise do not alias.
    source = pixels
    ratio = fix.px_per_mm() / px_per_mm
    if ratio > 1.25:
        source = cv2.GaussianBlur(pixels, (0, 0), sigmaX=0.4 * ratio)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    display = cv2.warpPerspective(source, to_photo, (width, height), flags=flags, borderValue=(0, 0, 0))
    coverage = np.ones(pixels.shape[:2], dtype=np.float32)
    inside = cv2.warpPerspective(coverage, to_photo, (width, height), flags=flags, borderValue=0) > 0.999
    patches = _read_patches(display, px_per_mm)
    return CardFrame(
        display=display,
        linear=fit_colour_response(patches).to_reflectance(display),
        inside=inside,
        sample_top=sample_top,
        patches=patches,
        px_per_mm=px_per_mm,
    )


def light_falloff(frame: CardFrame, objects: np.ndarray) -> np.ndarray:
    """The light across the canvas relative to the light on the card's patches (canvas-sized, mean 1 there).

    `objects` (canvas-sized bool) marks kernels and whatever is not bare tray. The tray has one colour, so
    its smoothed level is the light; under the card it is filled in from the tray around it.
    """
    import cv2
    from scipy.ndimage import gaussian_filter

    px_per_mm = frame.px_per_mm
    height, width = frame.inside.shape
    luma = luminance(frame.linear)
    # Drop shadows lie next to kernels: keep a margin around every object out of the tray.
    margin = max(1, round(1.0 * px_per_mm))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    tray = frame.inside & ~(cv2.dilate(objects.astype(np.uint8), disc) > 0)
    tray[_card_box(px_per_mm, margin_mm=0.5)] = False
    # The light, block by block: the median of bare-tray pixels in each block (kernel halos and pale
    # kernels missed by the colour test are a minority there), then smoothed between blocks.
    block = max(4, round(_FALLOFF_BLOCK_MM * px_per_mm))
    rows, cols = height // block, width // block
    trimmed = np.where(tray, luma, np.nan)[: rows * block, : cols * block]
    blocks = trimmed.reshape(rows, block, cols, block).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    counts = np.isfinite(blocks).sum(axis=-1)
    if counts.sum() < 50 or float(np.nanmedian(trimmed)) <= 1e-3:
        return np.ones((height, width), dtype=np.float32)  # no bare tray to read the light from
    known = counts >= 0.2 * block * block
    if not known.any():
        return np.ones((height, width), dtype=np.float32)
    level = np.full((rows, cols), np.nan)
    level[known] = np.nanmedian(blocks[known], axis=-1)
    # Blocks without enough tray take a distance-weighted mean of the known ones.
    weight = gaussian_filter(known.astype(np.float64), 1.0)
    filled = gaussian_filter(np.where(known, level, 0.0), 1.0) / np.maximum(weight, 1e-6)
    level = np.where(known, level, np.where(weight > 1e-3, filled, float(np.nanmedian(level))))
    level = gaussian_filter(level, 0.7)
    full = cv2.resize(level.astype(np.float32), (cols * block, rows * block), interpolation=cv2.INTER_LINEAR)
    full = cv2.copyMakeBorder(full, 0, height - rows * block, 0, width - cols * block, cv2.BORDER_REPLICATE)
    at_patches = float(np.mean([float(np.mean(full[box])) for box in _patch_boxes(px_per_mm)]))
    return np.asarray(np.clip(full / max(at_patches, 1e-6), 0.2, 5.0), dtype=np.float32)


def flatten_light(frame: CardFrame, objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reflectance, falloff) on the whole canvas, with the light's falloff across the tray taken out.

    The patches saw the light where they lie: the response is refitted with each patch's reflectance
    scaled by the light there, so the card's own shading (vignetting along it) does not bend the curve.
    """
    falloff = light_falloff(frame, objects)
    scales = np.array([float(np.mean(falloff[box])) for box in _patch_boxes(frame.px_per_mm)])
    response = fit_colour_response(frame.patches, light=scales)
    return response.to_reflectance(frame.display) / falloff[..., None], falloff


def _patch_boxes(px_per_mm: float) -> list[tuple[slice, slice]]:
    """Canvas slices of the core of each printed patch (card.PATCHES order)."""
    origin_mm = _FRAME_ORIGIN_MM
    boxes = []
    for patch in card.PATCHES:
        margin = patch.side * (1 - _PATCH_CORE) / 2
        x_a = round((patch.x + margin - origin_mm[0]) * px_per_mm)
        x_b = round((patch.x + patch.side - margin - origin_mm[0]) * px_per_mm)
        y_a = round((patch.y + margin - origin_mm[1]) * px_per_mm)
        y_b = round((patch.y + patch.side - margin - origin_mm[1]) * px_per_mm)
        boxes.append((slice(y_a, y_b), slice(x_a, x_b)))
    return boxes


def _read_patches(display: np.ndarray, px_per_mm: float) -> np.ndarray:
    """Median display value (n, 3) of the core of each printed patch on the canvas."""
    return np.asarray(
        [np.median(display[box].reshape(-1, 3), axis=0) for box in _patch_boxes(px_per_mm)],
        dtype=np.float32,
    )


def _card_box(px_per_mm: float, *, margin_mm: float) -> tuple[slice, slice]:
    """Canvas slices of the card, with a margin around it."""
    origin_mm = _FRAME_ORIGIN_MM
    width, height = card.CARD_SIZE_MM
    return (
        slice(
            max(0, round((-margin_mm - origin_mm[1]) * px_per_mm)),
            round((height + margin_mm - origin_mm[1]) * px_per_mm),
        ),
        slice(
            max(0, round((-margin_mm - origin_mm[0]) * px_per_mm)),
            round((width + margin_mm - origin_mm[0]) * px_per_mm),
        ),
    )


def display_from_reflectance(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance re-encoded with a fixed gamma, the way networks trained on photos expect to see it."""
    return np.asarray(np.clip(reflectance, 0.0, 1.0) ** (1.0 / DISPLAY_GAMMA), dtype=np.float32)


#: A pixel is kernel when its colour differs from the tray's by this much in log chromaticity, or it is
#: this much lighter (log); darker with the tray's own colour is shadow, not kernel.
_KERNEL_CHROMA = 0.12
_KERNEL_LIGHTER = 0.25
#: Pixels darker than this reflectance carry too little light to trust their colour (on a black tray, the
#: tray's own noise looks coloured); kernels there are found by being lighter than the tray.
_MIN_REFLECTANCE = 0.06
#: Least angle (degrees) between the tray's and the kernels' colours (linear RGB) for kernels to be cut out of
#: a light tray: 2-9 on a wood board (one photo in 32 reached 12), at least 10 on white, steel or grid paper.
_MIN_HUE_ANGLE = 9.0
#: Trays darker than this (mean reflectance) are read by level, not by unmixing tray and kernel colours.
_DARK_TRAY = 0.12
_DARK_TRAY_SHARE = 0.3
#: Holes in the mask up to this area (mm²) are inside a kernel (crease, spots) and filled; larger ones are tray
#: enclosed by a ring of touching kernels.
_MAX_HOLE_MM2 = 6.0


def _kernel_coverage(pixels: np.ndarray, tray: np.ndarray, kernel_pixels: np.ndarray) -> np.ndarray | None:
    """Share of each pixel covered by kernel, from its colour as tray x a + kernel x b (least squares).

    Edge pixels blend kernel and tray in linear light, and light scales both terms alike, so b / (a + b) is
    the kernel's share whatever the shading: a drop shadow (tray only, less light) gives 0, a kernel's shaded
    flank 1, an edge pixel its true share. Thresholding it at one half puts every outline where the kernel
    really ends, on a white tray as on a black one (thresholds in log colour shrank kernels on light trays
    and grew them on dark ones by about 2 %, one between-lot SD of kernel length).
    """
    kernel = np.median(kernel_pixels, axis=0)
    if float(tray.mean()) < _DARK_TRAY:
        # On a dark tray the tray term is mostly noise (and shadows do not show): the share is the pixel's
        # position between the tray's colour and the typical kernel's.
        step = (kernel - tray).astype(np.float32)
        scale = float(step @ step)
        if scale <= 1e-8:
            return np.zeros(pixels.shape[:2], dtype=np.float32)
        along = (
            (pixels[..., 0] - tray[0]) * step[0]
            + (pixels[..., 1] - tray[1]) * step[1]
            + (pixels[..., 2] - tray[2]) * step[2]
        )
        # A kernel's flanks face away from the light and are darker than its typical colour, with nothing
        # around them to tell: counting from a third of the way keeps them (at one half, widths came out
        # 4 % narrower than on light trays).
        return np.asarray(along / np.float32(scale) * np.float32(0.5 / _DARK_TRAY_SHARE), dtype=np.float32)
    basis = np.stack([tray, kernel], axis=1).astype(np.float64)  # (3, 2)
    cosine = float(tray @ kernel) / max(float(np.linalg.norm(tray) * np.linalg.norm(kernel)), 1e-12)
    if np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))) < _MIN_HUE_ANGLE:
        # Tray and kernels of one hue (a wood board): shading and coverage cannot be told apart, so no
        # kernel is trusted (the photo is then embedded whole and its kernels are not measured).
        return None
    unmix = np.linalg.pinv(basis).astype(np.float32)  # (2, 3)
    a = unmix[0, 0] * pixels[..., 0] + unmix[0, 1] * pixels[..., 1] + unmix[0, 2] * pixels[..., 2]
    b = unmix[1, 0] * pixels[..., 0] + unmix[1, 1] * pixels[..., 1] + unmix[1, 2] * pixels[..., 2]
    a = np.maximum(a, 0.0)
    b = np.maximum(b, 0.0)
    return np.asarray(b / np.maximum(a + b, 1e-6), dtype=np.float32)


def kernel_pixels(
    reflectance: np.ndarray,
    inside: np.ndarray,
    tray_ring: np.ndarray,
    *,
    by_level: bool = True,
    px_per_mm: float = SAMPLE_PX_PER_MM,
) -> np.ndarray:
    """Mask of kernel (and impurity) pixels on a calibrated canvas, drop shadows left out.

    In reflectance a shadow is the tray at a lower level, with the tray's own colour, while a kernel has its
    own colour, or is lighter than the tray (a black tray): the test is made in log colour relative to the
    tray, so it holds for every tray colour. The tray's colour, and how much it varies (texture, noise), are
    read from `tray_ring`, bare tray around the card: a dense sample covers half the canvas, so the canvas
    median is not the tray. With `by_level` False only colour counts: before the light's falloff is taken
    out, a lit part of the tray can look lighter than a shaded one.
    """
    import cv2

    reference = _spaced(inside & tray_ring)
    if len(reference) < 50:
        return np.zeros(inside.shape, dtype=bool)
    smooth = cv2.GaussianBlur(np.maximum(reflectance, 1e-4).astype(np.float32), (0, 0), sigmaX=1.0)
    log = np.log(np.maximum(smooth, _MIN_REFLECTANCE / 4))
    lit = (smooth[..., 0] + smooth[..., 1] + smooth[..., 2]) >= np.float32(3 * _MIN_REFLECTANCE)
    tray = np.median(log.reshape(-1, 3)[reference], axis=0)
    # Channel by channel: reductions over a last axis of 3 are slow in numpy.
    offsets = [log[..., c] - np.float32(tray[c]) for c in range(3)]
    level = (offsets[0] + offsets[1] + offsets[2]) / np.float32(3.0)
    chroma = np.sqrt((offsets[0] - level) ** 2 + (offsets[1] - level) ** 2 + (offsets[2] - level) ** 2)
    # A textured or noisy tray spreads its own colour: the thresholds stay well outside that spread.
    # (Only where the tray is lit enough to have a colour: a black tray's ring holds just the card's glow.)
    lit_ring = reference[lit.ravel()[reference]]
    spread = float(np.percentile(chroma.ravel()[lit_ring], 90)) if len(lit_ring) > 0.5 * len(reference) else 0.0
    chroma_limit = max(_KERNEL_CHROMA, 4.0 * spread)
    level_limit = max(_KERNEL_LIGHTER, 2.0 * float(np.percentile(level.ravel()[reference], 90)))
    by_colour = (chroma > np.float32(chroma_limit)) & lit
    mask = inside & ((by_colour | (level > np.float32(level_limit))) if by_level else by_colour)
    flat = smooth.reshape(-1, 3)
    coverage = (
        _kernel_coverage(smooth, np.median(flat[reference], axis=0), flat[_spaced(mask)]) if mask.sum() > 100 else None
    )
    if coverage is None:
        return np.zeros(inside.shape, dtype=bool)
    mask = inside & (coverage > 0.5)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    _, labels, stats, _ = cv2.connectedComponentsWithStats(_holes(mask), connectivity=4)
    small = stats[:, cv2.CC_STAT_AREA] <= _MAX_HOLE_MM2 * px_per_mm**2
    small[0] = False  # label 0 is everything that is not a hole
    return np.asarray(mask | small[labels], dtype=bool)


#: Statistics of many pixels (the tray's median colour, a kernel's typical colour) are read from at most this
#: many, evenly spaced: a median over 20,000 pixels is as good as over half a million, and 20 times faster.
_STATISTICS_PIXELS = 20_000


def _spaced(mask: np.ndarray) -> np.ndarray:
    """Flat indices of the mask's pixels, at most _STATISTICS_PIXELS of them, evenly spaced."""
    index = np.flatnonzero(mask)
    return index[:: len(index) // _STATISTICS_PIXELS] if len(index) > 2 * _STATISTICS_PIXELS else index


def _holes(mask: np.ndarray) -> np.ndarray:
    """uint8 mask of the background enclosed by the mask (background not 4-connected to the image's edge)."""
    import cv2

    padded = np.pad(mask.astype(np.uint8), 1)
    cv2.floodFill(padded, None, (0, 0), 1, flags=4)
    return np.ascontiguousarray(padded[1:-1, 1:-1] == 0).astype(np.uint8)
