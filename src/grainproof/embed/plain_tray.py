"""Kernels measured without the card: the tray itself is the reference for light, colour and segmentation.

Most photos a user holds were taken without the grainproof card (old reference lots, other intake apps, labs
photographing kernels on black or white). A plain tray, of whatever colour, is still a reference:

1. its colour around each place (`photos.tray_background`, on a coarse grid) is the light falling there,
   so dividing by it takes vignetting and a hand's shadow out (light trays; a dark tray shows too little);
2. a neutral tray has the light's colour: grey-world on its pixels white-balances the photo, and a light
   tray also sets the exposure, so colours become ratios to the tray that light and phone do not move;
3. kernels are then cut out as on the card's canvas (`calibration.kernel_pixels`: unmixing tray and kernel
   colours, so drop shadows stay out and edges fall where kernels end), touching kernels cut apart at their
   necks, kernels cut by the photo's edge dropped (`morphometrics.measure_kernels`);
4. with no mm scale, the morphological sizes (spots, necks, dust) follow the kernels' own width in pixels,
   and sizes are reported in mm at the photo's nominal scale (the protocol's field of view, or the EXIF
   focal length at a fixed capture distance): `reference.phone_scale` puts them on one scale per phone.

Numpy, Pillow and OpenCV; no torch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from grainproof.embed.photos import KernelView

#: Photos are shrunk by the largest whole factor that keeps their long side at least this many pixels (a
#: 12-megapixel photo's kernels are still ~20 px wide there, as on the card's 6 px/mm canvas), so the time
#: does not grow with the phone's resolution.
MEASURE_LONG_SIDE = 640
#: Cells of the coarse tray background on the photo's short side (the network canvas uses 448 / 8 = 56).
COARSE_CELLS = 56
#: Typical kernel width (mm) of the cereals grainproof serves: sets the morphological sizes (dark-spot closing,
#: neck depth, dust) from the kernels' width in pixels when no card gives the scale.
TYPICAL_KERNEL_WIDTH_MM = 3.0
#: Objects under this share of the typical object's area are specks, not kernels or impurities (a weed seed is
#: about 7 % of a wheat kernel's area).
SPECK_SHARE = 0.05
#: The kernels' own scale is kept within these bounds (px per mm).
SELF_SCALE_RANGE = (1.0, 60.0)
#: Display gamma undone to get linear light (sRGB-like; the card path fits each phone's curve instead).
DISPLAY_GAMMA = 2.2
#: A tray darker than this (display level) carries too little light to read its colour (the rice photos'
#: black is 0); one at least this light also sets the exposure, brought to TRAY_LEVEL.
MEASURABLE_TRAY = 0.1
LIGHT_TRAY = 0.5
TRAY_LEVEL = 0.8
#: A tray whose brightest channel is at most this ratio of its darkest (display values) is taken as neutral
#: (white, grey, steel, black: the light's colour); a coloured one (blue) is not white-balanced on.
NEUTRAL_TRAY_RATIO = 1.4
#: Linear level below which a black tray's colour is taken as this (colours relative to it stay finite).
DARK_TRAY_FLOOR = MEASURABLE_TRAY**DISPLAY_GAMMA
#: A coloured tray whose hue (about the grey axis) lies within this angle (degrees) of the kernels', and which
#: is at least GRAIN_HUED_TRAY_SATURATION as saturated as they are, is the grain's own colour (a wood board):
#: kernels cannot be cut out of it by colour, and are not measured. Hue angle and the ratio of saturations,
#: unlike the card path's angle between colour vectors, do not grow with a phone's saturation. Cereal grains
#: span about 25-45 degrees of hue (red-brown to straw); a blue tray lies some 180 away. A white tray under a
#: warm bulb takes the grain's hue but, the same light casting both, at most about half its saturation (0.54
#: on the simulated phones); a board of the grain's own colour has about the same (0.84-1.0): three quarters
#: lies between.
GRAIN_HUED_TRAY_DEGREES = 45.0
GRAIN_HUED_TRAY_SATURATION = 0.75
#: A lit tray is a colour reference only where its light is of the kernels' order: kernels at most this many
#: times as light as the tray (linear). On a black tray lifted by the exposure (kernels 8-12 times lighter)
#: the phone's tone curve treats tray and kernels differently, so balancing on the tray does not balance the
#: kernels: on the simulated phones their hue over such a tray spread 3x as much between phones as over a white
#: or steel tray.
MAX_KERNEL_OVER_TRAY = 2.0
#: EXIF tags: the Exif sub-IFD, and the focal length in 35 mm film terms (its diagonal is 43.27 mm).
_EXIF_IFD, _FOCAL_35MM = 0x8769, 0xA405
_FILM_DIAGONAL_MM = 43.27

_LINEAR = (np.arange(256, dtype=np.float32) / 255.0) ** DISPLAY_GAMMA


def nominal_px_per_mm(
    image: Image.Image, *, field_of_view_mm: float, capture_distance_mm: float | None = None
) -> float:
    """Pixels per mm the photo would have at the protocol's framing: from the EXIF focal length (35 mm terms)
    when the capture distance is fixed (`capture_distance_mm`), else from the field of view across its long side."""
    width, height = image.size
    if capture_distance_mm:
        focal = image.getexif().get_ifd(_EXIF_IFD).get(_FOCAL_35MM)
        if focal:
            field_diagonal_mm = capture_distance_mm * _FILM_DIAGONAL_MM / float(focal)
            return float(np.hypot(width, height)) / field_diagonal_mm
    return max(width, height) / field_of_view_mm


class StageTimes(dict[str, float]):
    """CPU seconds of this process spent in each named stage, lap after lap (`grainproof bench embed` prints
    them): on a machine shared with other jobs, wall time would count their turns too."""

    def __init__(self) -> None:
        super().__init__()
        self._last = time.process_time()

    def lap(self, stage: str) -> None:
        now = time.process_time()
        self[stage] = self.get(stage, 0.0) + now - self._last
        self._last = now


def hue_angle(rgb: np.ndarray) -> np.ndarray:
    """Hue angle about the grey axis (radians in (-pi, pi]; 0 red, pi/3 yellow) of colours (..., 3): a scaling of
    colours about the grey axis (a phone's saturation) leaves it."""
    rgb = np.asarray(rgb, dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.arctan2(np.sqrt(3.0) * (green - blue), 2.0 * red - green - blue)


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """`hue_angle` in degrees, 0 to 360 (0 red, 60 yellow, 240 blue)."""
    return np.degrees(hue_angle(rgb)) % 360.0


def _saturation(rgb: np.ndarray) -> float:
    return float((rgb.max() - rgb.min()) / max(float(rgb.max()), 1e-6))


def _grain_hued(tray: np.ndarray, kernels: np.ndarray) -> bool:
    """Whether a tray has the kernels' colour: its hue within GRAIN_HUED_TRAY_DEGREES of theirs, and at least
    GRAIN_HUED_TRAY_SATURATION of their saturation (both display colours)."""
    gap = abs(float(hue_degrees(tray)) - float(hue_degrees(kernels))) % 360.0
    return min(gap, 360.0 - gap) < GRAIN_HUED_TRAY_DEGREES and _saturation(
        tray
    ) >= GRAIN_HUED_TRAY_SATURATION * _saturation(kernels)


def _measuring_pixels(image: Image.Image, long_side: int) -> tuple[np.ndarray, float]:
    """(uint8 pixels shrunk to a long side of at least `long_side`, their scale relative to the image).

    Shrunk by a whole factor (the mean of k x k blocks: exact, and the fastest way down)."""
    factor = max(1, max(image.size) // long_side)
    if factor > 1:
        image = image.reduce(factor)
    return np.asarray(image), 1.0 / factor


def _kernels_and_scale(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """(the mask without specks, pixels per mm if its typical object were a kernel TYPICAL_KERNEL_WIDTH_MM wide).

    Specks (a noisy phone's grain on a dark tray, JPEG blocks) can be most of the objects but hold little of
    the mask: the typical object is the one at the middle of the mask's area; objects under SPECK_SHARE of
    it go, and the median width of those of at least a quarter of it (touching kernels are few) is a kernel's.
    """
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return mask, SELF_SCALE_RANGE[0]
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    area[0] = 0.0  # the background
    order = np.argsort(area)
    typical = float(area[order][np.searchsorted(np.cumsum(area[order]), 0.5 * area.sum())])
    cleaned = (area >= SPECK_SHARE * typical)[labels]
    contours, _ = cv2.findContours(cleaned.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    widths = [min(cv2.minAreaRect(c)[1]) for c in contours if cv2.contourArea(c) >= 0.25 * typical]
    if not widths:
        return cleaned, SELF_SCALE_RANGE[0]
    return cleaned, float(np.clip(float(np.median(widths)) / TYPICAL_KERNEL_WIDTH_MM, *SELF_SCALE_RANGE))


def plain_tray_view(
    image: Image.Image,
    *,
    field_of_view_mm: float,
    capture_distance_mm: float | None = None,
    long_side: int = MEASURE_LONG_SIDE,
    times: StageTimes | None = None,
) -> KernelView:
    """The photo as a kernel view without the card: linear light with the tray's falloff divided out,
    white-balanced on the tray (exposure too on a light tray), its kernel mask, and the scales.

    `long_side` caps the measuring resolution; `times`, when given, gets the seconds of each stage.
    """
    import cv2

    from grainproof.embed.calibration import kernel_pixels
    from grainproof.embed.photos import KernelView, tray_background

    times = times if times is not None else StageTimes()
    pixels, factor = _measuring_pixels(image, long_side)
    times.lap("resize")
    nominal = nominal_px_per_mm(image, field_of_view_mm=field_of_view_mm, capture_distance_mm=capture_distance_mm)
    block = max(2, round(min(pixels.shape[:2]) / COARSE_CELLS))
    height, width = (pixels.shape[0] // block) * block, (pixels.shape[1] // block) * block
    pixels = np.ascontiguousarray(pixels[:height, :width])
    cells = cv2.resize(pixels, (width // block, height // block), interpolation=cv2.INTER_AREA)
    background, coarse_kernels = tray_background(cells.astype(np.float32) * np.float32(1 / 255))
    tray_cells = ~coarse_kernels
    tray_display = np.median(background[tray_cells], axis=0) if tray_cells.any() else np.zeros(3)
    neutral = float(tray_display.max()) <= NEUTRAL_TRAY_RATIO * max(float(tray_display.min()), 1e-6)
    # (A tray too dark to read its colour has no hue to compare: its kernels are found by level.)
    grain_hued = (
        not neutral
        and float(tray_display.mean()) >= MEASURABLE_TRAY
        and coarse_kernels.any()
        and _grain_hued(tray_display, np.median(cells[coarse_kernels], axis=0).astype(np.float64) / 255.0)
    )
    if not tray_cells.any() or grain_hued:
        return KernelView(
            reflectance=_LINEAR[pixels],
            kernel_mask=np.zeros((height, width), dtype=bool),
            px_per_mm=nominal * factor,
            calibrated=False,
            tray=np.full(3, DARK_TRAY_FLOOR, dtype=np.float32),
            size_factor=1.0,
            colour_reference=False,
            tray_lit=False,
        )
    level = float(tray_display.mean())
    linear = _LINEAR[pixels]
    tray = np.maximum(tray_display.astype(np.float32) ** DISPLAY_GAMMA, np.float32(DARK_TRAY_FLOOR))
    gains = np.ones(3, dtype=np.float32)
    if level >= MEASURABLE_TRAY:
        # The light falling on each place, relative to the tray's typical level.
        falloff = (background**DISPLAY_GAMMA).mean(axis=2) / float(tray.mean())
        falloff = cv2.resize(
            np.clip(falloff, 0.2, 5.0).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR
        )
        linear = linear / falloff[..., None]
        if neutral:
            gains = np.float32(tray.mean()) / tray  # grey world on the tray: the light's colour
        if level >= LIGHT_TRAY:
            gains = gains * np.float32(TRAY_LEVEL / float(tray.mean()))
    image_linear = np.ascontiguousarray(linear * gains, dtype=np.float32)
    times.lap("tray: light and colour")
    # Colours are read relative to the tray's grey level; a coloured tray's own hue is not the light's.
    tray_seen = ((tray if neutral else np.full(3, tray.mean())) * gains).astype(np.float32)
    # Bare tray well away from kernels: the reference the kernel test reads the tray's colour and noise from.
    far_from_kernels = cv2.erode(tray_cells.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if far_from_kernels.sum() < 4:
        far_from_kernels = tray_cells
    reference = np.repeat(np.repeat(far_from_kernels, block, axis=0), block, axis=1)
    inside = np.ones((height, width), dtype=bool)
    mask = kernel_pixels(image_linear, inside, reference, px_per_mm=nominal * factor)
    mask, self_scale = _kernels_and_scale(mask) if mask.any() else (mask, nominal * factor)
    kernel_level = float(np.median(image_linear[mask].mean(axis=1))) if mask.any() else np.inf
    times.lap("kernel mask")
    return KernelView(
        reflectance=image_linear,
        kernel_mask=mask,
        px_per_mm=self_scale,
        calibrated=False,
        tray=tray_seen,
        size_factor=self_scale / (nominal * factor),
        # A lit tray is a colour reference where it is neutral (a coloured tray's hue is not the light's) and
        # lit about as the kernels are. A background returning no light balances nothing: the colours are the
        # camera's own, comparable between photos of one setup (a lab's black, like the rice photos').
        colour_reference=level < MEASURABLE_TRAY
        or (neutral and kernel_level <= MAX_KERNEL_OVER_TRAY * float(tray_seen.mean())),
        tray_lit=level >= MEASURABLE_TRAY,
    )
