"""Per-kernel morphometrics on a calibrated tray photo: sizes in mm and colours in linear reflectance.

A CNN embedding of a tray photo carries little of a lot's origin; the lot's latent traits (kernel size,
colour, weathering, broken, shrivelled and impurity shares) do. When preprocessing has warped a photo to a
known scale (`px_per_mm`) and to linear reflectance (calibration card), classical measurements of each
kernel estimate those traits directly. Arrays in, arrays out: no file I/O, no torch.

The caller supplies the kernel mask (kernels True, tray False). Drop shadows must not be in it: a shadow
inside the mask lengthens kernels by up to ~1.7 mm under a low light.

- `measure_kernels`: one row per object (sizes, convexity, colour, dark spots, wrinkles), touching kernels
  cut apart at narrow necks;
- `classify_kernels`: weed seeds, chaff, clumps, broken, shrivelled and whole grains, judged against the
  photo's own typical grain, so the rules hold for every variety;
- `photo_morphometrics` (= `summarise_kernels(measure_kernels(...))`): one vector per photo,
  MORPHOMETRIC_FEATURES; `lot_morphometrics`: the lot's mean, photos on the fallback left out.

The reflectance should have the light's falloff across the tray taken out too (grainproof.embed.calibration
does): uncorrected vignetting and hand shadows cut lightness's correlation with its trait from 0.98 to 0.62.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from grainproof.embed.plain_tray import hue_angle
from grainproof.measurement_layout import CARD_MEASUREMENTS, MEASUREMENT_NAMES, TRAY_COLOUR_MEASUREMENTS

#: Per-photo features in this order. A lot's features are the mean of its photos' vectors, so every
#: feature is a log-size, a log-colour or a share (a proportion), all of which average meaningfully.
MORPHOMETRIC_FEATURES: tuple[str, ...] = (
    "log_length_mm",  # whole grains lying alone: trimmed mean of log length (mm)
    "log_width_mm",  # the same grains: trimmed mean of log width (mm)
    "log_lightness",  # sound grains, less spotted half: trimmed mean of log mean-RGB reflectance of the interior
    "redness",  # the same grains: trimmed mean of log(R / B) of the interior
    "weathering",  # grains not shrivelled: mean share of the interior covered by dark spots
    "broken_share",  # grains shorter than BROKEN_LENGTH x the photo's typical grain, among all grains
    "shrivelled_share",  # unbroken grains thinner than SHRIVELLED_WIDTH x typical and wrinkled, among unbroken
    "impurity_share",  # objects that are not grain (dark small weed seeds, pale or thin smooth chaff), among all
    "kernel_count",  # whole grains lying alone inside the frame: the sample the sizes were taken over
)

#: With fewer whole grains lying alone than this, a photo's summaries are not measured: `photo_morphometrics`
#: returns FALLBACK_FEATURES (kernel_count 0); the caller should warn and leave the photo out of the lot mean
#: (an empty tray, a wrong mask, or a tray so crowded that nearly every kernel touches another).
MIN_KERNELS = 5
#: The defined fallback: zeros everywhere, kernel_count 0. NaN-free, and recognisable: log_length_mm = 0 would
#: be a 1 mm kernel.
FALLBACK_FEATURES = np.zeros(len(MORPHOMETRIC_FEATURES), dtype=np.float64)

#: Objects smaller than this (mm²) are dust or mask noise, not kernels (the smallest weed seed is ~1.3 mm²).
MIN_OBJECT_MM2 = 0.6
#: Blobs less convex than this are touching or piled kernels: counted, never measured.
MIN_SOLIDITY = 0.86
#: Touching kernels are cut apart at a neck between concavities deeper than CUT_DEPTH_MM, if the neck is at
#: most CUT_NECK_MM wide (a wider join is a kernel lying on another), while the blob is less convex than
#: CUT_SOLIDITY; at most MAX_CUTS cuts per blob.
CUT_DEPTH_MM = 0.6
CUT_NECK_MM = 1.2
CUT_SOLIDITY = 0.90
MAX_CUTS = 4
#: Clump: a convex blob this much larger (log area) or longer (log length) than the median grain is several grains.
CLUMP_AREA = 0.30
CLUMP_LENGTH = 0.25
#: Broken: shorter than this share of the photo's median grain length (pieces keep 35-75 % of the length).
BROKEN_LENGTH = 0.82
#: Shrivelled: unbroken, thinner than this share of the median width (shrivelled grains are ~0.72x) ...
#: A share of a few percent needs a false-positive rate well below it. At 0.90 (1.3 SDs of the kernel-to-kernel
#: width spread, CV ~8 %, below the median) about a tenth of sound grains passed the width test and rested on
#: the noisy wrinkle test alone: the simulated lots measured twice their true share, at r = 0.20 with the card
#: and 0.12 without (`grainproof bench measurements`, 600 lots each); at 0.80 (2.8 SDs) under 0.5 % of sound
#: grains pass, shrivelled ones still do, and r = 0.39 and 0.36 (docs/embedding.md).
SHRIVELLED_WIDTH = 0.80
#: ... and wrinkled: the interior's upper-quartile darkening against its along-axis closing at least this
#: (wrinkles are stripes across the kernel ~0.9 mm apart: smooth kernels measure ~0, shrivelled ~0.05).
SHRIVELLED_WRINKLE = 0.02
#: Weed seed: darker than this share of the median grain lightness and shorter than WEED_LENGTH x its length.
WEED_LIGHTNESS = 0.45
WEED_LENGTH = 0.6
#: Chaff: paler (lightness ratio) and less red (log R/B difference) than the median grain, or much thinner.
CHAFF_LIGHTNESS = 1.16
CHAFF_REDNESS = -0.25
CHAFF_WIDTH = 0.62
#: Dark spot: a pixel darker than this share of its along-axis closing (spots darken by up to 45 %).
SPOT_DEPTH = 0.80
#: Side (canvas px) of the median filter dark spots are read through. Specks of a pixel or two (a noisy, coarse
#: phone's grain and JPEG blocks) vanish, spots (0.5 mm across and more) stay. Without it, lots from the two
#: noisiest of 14 simulated phones, held out together, were flagged 23-31 % of the time at alpha 0.05 and the
#: realised rate was 0.061 / 0.057 (two worlds); with it, 0.049 / 0.042 at no loss of AUROC. Wrinkles, finer,
#: are read without it (it cut a shrivelled lot's measured share from 0.17 to 0.12).
SPOT_MEDIAN_PX = 3
#: Length (mm) of the line element that closes dark spots along the kernel axis but not the crease.
SPOT_CLOSING_MM = 1.2
#: Half-width (log size) of the band of typical grains the photo's reference grain is taken over.
TYPICAL_BAND = 0.15
#: Colours are taken over the sound grains with at most this quantile of dark-spot share: weathering greys
#: and darkens a kernel as it spots it, so the less spotted half shows the lot's own colour (on 80 simulated
#: lots, correlation of redness with its latent trait 0.90 -> 0.94 for bergamo, 0.94 -> 0.97 for aurelio).
COLOUR_SPOT_QUANTILE = 0.5
#: The outline runs through edge pixels' centres: at the pointed tips the last centre falls about half a pixel
#: short of the true end, along the long curved sides the outermost centre lies almost on the edge (measured on
#: rendered kernels with a half-coverage mask).
LENGTH_EDGE_PX = 1.0
WIDTH_EDGE_PX = 0.4
#: Band (mm) along each kernel's outline left out of its colour and spots: where the kernel meets the tray.
EDGE_MM = 0.3
#: Share trimmed from each end of a trimmed mean.
TRIM = 0.2
#: Gamma the tray-relative colour is encoded with before its hue is read (phones saturate display values).
HUE_GAMMA = 2.2


@dataclass(frozen=True, slots=True)
class KernelTable:
    """Measurements of every object on a photo, one row per object (mm, linear reflectance)."""

    centre_px: np.ndarray  # (n, 2) x, y
    length_mm: np.ndarray  # (n,) long side of the minimum-area rectangle
    width_mm: np.ndarray  # (n,) short side
    area_mm2: np.ndarray  # (n,)
    solidity: np.ndarray  # (n,) area / convex hull area; low for touching kernels
    roundness: np.ndarray  # (n,) 4 area / (pi length^2): 1 for a disc (ImageJ's "round"; no perimeter, which
    #                        pixel steps inflate unevenly across resolutions)
    eccentricity: np.ndarray  # (n,) of the ellipse with the object's second moments: 0 a disc, towards 1 a needle
    colour: np.ndarray  # (n, 3) mean linear reflectance of the eroded interior
    dark_share: np.ndarray  # (n,) share of the interior in dark spots (weathering)
    wrinkle: np.ndarray  # (n,) upper-quartile darkening of the interior against its along-axis closing
    touches_border: np.ndarray  # (n,) bool: cut by the photo's edge, so its size is unknown
    from_clump: np.ndarray  # (n,) bool: a piece cut out of touching kernels (may be partly hidden)

    def __len__(self) -> int:
        return len(self.length_mm)


def _empty_table() -> KernelTable:
    empty = np.zeros(0, dtype=np.float64)
    return KernelTable(
        centre_px=np.zeros((0, 2)),
        length_mm=empty,
        width_mm=empty,
        area_mm2=empty,
        solidity=empty,
        roundness=empty,
        eccentricity=empty,
        colour=np.zeros((0, 3)),
        dark_share=empty,
        wrinkle=empty,
        touches_border=np.zeros(0, dtype=bool),
        from_clump=np.zeros(0, dtype=bool),
    )


def _check_inputs(reflectance: np.ndarray, mask: np.ndarray, px_per_mm: float) -> None:
    if reflectance.ndim != 3 or reflectance.shape[2] != 3:
        raise ValueError(f"reflectance must be (h, w, 3), got {reflectance.shape}")
    if mask.shape != reflectance.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match reflectance {reflectance.shape[:2]}")
    if not px_per_mm > 0:
        raise ValueError(f"px_per_mm must be positive, got {px_per_mm}")
    if not np.isfinite(reflectance).all():
        raise ValueError("reflectance has NaN or infinite values; the calibration failed on this photo")


def _line_element(length_px: int, angle: float) -> np.ndarray:
    """A one-pixel line structuring element of odd length along `angle` (radians, image x/y)."""
    half = length_px // 2
    element = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.uint8)
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    cv2.line(element, (round(half - dx), round(half - dy)), (round(half + dx), round(half + dy)), 1, 1)
    return element


def _neck(contour: np.ndarray, defects: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The narrowest neck of a blob: the shortest chord from a deep concavity to a point of the outline
    across the blob (another concavity, usually), that stays inside the blob."""
    points = contour[:, 0, :]
    n = len(points)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for index in defects[:, 2]:
        offsets = np.abs(np.arange(n) - int(index))
        across = np.minimum(offsets, n - offsets) > n // 6  # not the concavity's own flanks
        start = points[index]
        ends = points[across]
        if len(ends) == 0:
            continue
        distances = np.hypot(*(ends - start).T)
        for j in np.argsort(distances)[:5]:
            middle = (start + ends[j]) // 2
            if inside[int(middle[1]), int(middle[0])]:
                if best is None or distances[j] < best[0]:
                    best = (float(distances[j]), start, ends[j])
                break
    return None if best is None else (best[1], best[2])


def _cut_clumps(binary: np.ndarray, px_per_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The mask with cut lines through the necks of touching kernels (deep concavities of non-convex blobs),
    and the mask of the blobs that were cut."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    cut = binary.copy()
    was_cut = np.zeros(binary.shape, dtype=bool)
    min_depth = CUT_DEPTH_MM * px_per_mm * 256  # convexityDefects reports depth in 1/256 px
    max_neck = CUT_NECK_MM * px_per_mm
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < MIN_OBJECT_MM2 * px_per_mm**2 * 2:
            continue
        obj = (labels[y : y + h, x : x + w] == k).astype(np.uint8)
        changed = False
        for _ in range(MAX_CUTS):
            # 4-connected outlines, so the pieces either side of a one-pixel cut are separate outlines.
            pieces, piece_labels = cv2.connectedComponents(obj, connectivity=4)
            contours: list[np.ndarray] = []
            for piece in range(1, pieces):
                outline = (piece_labels == piece).astype(np.uint8)
                contours.extend(cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0])
            cut_made = False
            for contour in contours:
                if len(contour) < 8:
                    continue
                hull = cv2.convexHull(contour, returnPoints=False)
                hull_area = cv2.contourArea(contour[hull[:, 0]])
                if hull_area <= 0 or cv2.contourArea(contour) / hull_area >= CUT_SOLIDITY:
                    continue
                try:
                    defects = cv2.convexityDefects(contour, hull)
                except cv2.error:  # non-monotonic hull on a self-touching outline
                    continue
                if defects is None:
                    continue
                defects = defects.reshape(-1, 4)
                deep = defects[defects[:, 3] >= min_depth]
                if len(deep) == 0:
                    continue
                neck = _neck(contour, deep, obj.astype(bool))
                if neck is None:
                    continue
                start, end = neck
                if np.hypot(*(end - start)) > max_neck:
                    continue  # a wide join is one kernel lying on another: no cut gives whole kernels
                # A one-pixel line separates the two sides for 4-connected labelling.
                cv2.line(obj, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), 0, 1)
                cut_made = changed = True
            if not cut_made:
                break
        if changed:
            blob = labels[y : y + h, x : x + w] == k
            cut[y : y + h, x : x + w][blob] = obj[blob]
            was_cut[y : y + h, x : x + w] |= blob
    return cut, was_cut


def measure_kernels(reflectance: np.ndarray, mask: np.ndarray, px_per_mm: float) -> KernelTable:
    """Size, convexity, colour and surface of each connected object of the mask.

    Sizes come from the minimum-area rectangle of the object's outline (plus LENGTH_EDGE_PX, WIDTH_EDGE_PX:
    the outline runs through the centres of the edge pixels), so they carry the mask's own boundary offset:
    a mask drawn at other than half coverage of the edge pixels widens or narrows every kernel alike.
    Colours and spots are measured over the interior, EDGE_MM inside the outline, so they do not depend on
    the tray's colour. Touching
    kernels are first cut apart at narrow necks; the pieces are flagged `from_clump`.
    """
    _check_inputs(reflectance, mask, px_per_mm)
    height, width = mask.shape
    whole_mask = np.ascontiguousarray(mask, dtype=np.uint8)
    binary, was_cut = _cut_clumps(whole_mask, px_per_mm)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=4)
    min_area_px = MIN_OBJECT_MM2 * px_per_mm**2
    keep = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_area_px]
    if not keep:
        return _empty_table()

    image = np.asarray(reflectance, dtype=np.float32)
    # Edge pixels mix kernel and tray (and a shadow that leaked in): colours and spots are measured inside.
    edge_px = max(1, round(EDGE_MM * px_per_mm))
    interior = cv2.erode(binary, np.ones((3, 3), np.uint8), iterations=edge_px).astype(bool)
    grey = image.mean(axis=2)
    # Luminance lightly smoothed so single-pixel sensor noise does not read as wrinkles ...
    luminance = cv2.GaussianBlur(grey, (0, 0), 0.7)
    # ... and, for dark spots, first median-filtered (SPOT_MEDIAN_PX): a noisy phone's specks are not spots.
    spot_luminance = cv2.GaussianBlur(cv2.medianBlur(grey, SPOT_MEDIAN_PX), (0, 0), 0.7)
    closing_px = max(3, round(SPOT_CLOSING_MM * px_per_mm) | 1)
    pad = closing_px // 2 + 1

    n = len(keep)
    length, breadth, solidity, eccentricity = np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n)
    colour, dark_share, wrinkle = np.zeros((n, 3)), np.zeros(n), np.zeros(n)
    border, from_clump = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for row, k in enumerate(keep):
        x, y, w, h = (int(v) for v in stats[k, :4])
        border[row] = x == 0 or y == 0 or x + w == width or y + h == height
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(width, x + w + pad), min(height, y + h + pad)
        obj = (labels[y0:y1, x0:x1] == k).astype(np.uint8)
        contours, _ = cv2.findContours(obj, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outline = max(contours, key=len)
        rect = cv2.minAreaRect(outline)
        side_a, side_b = rect[1]
        box = cv2.boxPoints(rect)
        edge_a, edge_b = box[1] - box[0], box[2] - box[1]
        long_edge = edge_a if np.hypot(*edge_a) >= np.hypot(*edge_b) else edge_b
        axis = float(np.arctan2(long_edge[1], long_edge[0]))
        length[row] = (max(side_a, side_b) + LENGTH_EDGE_PX) / px_per_mm
        breadth[row] = (min(side_a, side_b) + WIDTH_EDGE_PX) / px_per_mm
        hull_area = cv2.contourArea(cv2.convexHull(outline))
        if hull_area > 0:
            solidity[row] = cv2.contourArea(outline) / hull_area
        eccentricity[row] = _eccentricity(cv2.moments(obj, binaryImage=True))

        inside = obj.astype(bool)
        from_clump[row] = bool(was_cut[y0:y1, x0:x1][inside].any())
        inner = interior[y0:y1, x0:x1] & inside
        if inner.sum() < 4:
            colour[row] = image[y0:y1, x0:x1][inside].mean(axis=0)  # too small to erode: all its pixels
            continue
        colour[row] = image[y0:y1, x0:x1][inner].mean(axis=0)
        # Dark spots are features shorter than the closing element along the kernel's axis; the crease runs
        # along the axis, so the closing does not fill it and it does not count as weathering.
        element = _line_element(closing_px, axis)
        spots = np.where(inside, spot_luminance[y0:y1, x0:x1], 0.0).astype(np.float32)
        closed = cv2.morphologyEx(spots, cv2.MORPH_CLOSE, element)
        dark_share[row] = float(np.mean(1.0 - spots[inner] / np.maximum(closed[inner], 1e-6) > 1.0 - SPOT_DEPTH))
        lum = np.where(inside, luminance[y0:y1, x0:x1], 0.0).astype(np.float32)
        closed = cv2.morphologyEx(lum, cv2.MORPH_CLOSE, element)
        darkening = 1.0 - lum[inner] / np.maximum(closed[inner], 1e-6)
        quartile = len(darkening) * 3 // 4
        wrinkle[row] = float(np.partition(darkening, quartile)[quartile])

    rows = np.asarray(keep)
    area = stats[rows, cv2.CC_STAT_AREA].astype(np.float64) / px_per_mm**2
    return KernelTable(
        centre_px=np.asarray(centroids[rows], dtype=np.float64),
        length_mm=length,
        width_mm=breadth,
        area_mm2=area,
        solidity=solidity,
        roundness=4.0 * area / (np.pi * np.maximum(length, 1e-6) ** 2),
        eccentricity=eccentricity,
        colour=colour,
        dark_share=dark_share,
        wrinkle=wrinkle,
        touches_border=border,
        from_clump=from_clump,
    )


def _eccentricity(moments: dict[str, float]) -> float:
    """Eccentricity of the ellipse with these central second moments."""
    a, b, c = moments["mu20"], moments["mu02"], moments["mu11"]
    spread = float(np.hypot(a - b, 2.0 * c))
    major, minor = (a + b + spread) / 2.0, (a + b - spread) / 2.0
    return float(np.sqrt(max(0.0, 1.0 - minor / major))) if major > 0 else 0.0


@dataclass(frozen=True, slots=True)
class KernelClasses:
    """What each object of a KernelTable is (boolean masks over its rows), judged against the photo's own grains."""

    measured: np.ndarray  # inside the frame (not cut by the edge)
    weed_seed: np.ndarray
    chaff: np.ndarray
    clump: np.ndarray  # touching or piled grains that could not be cut apart: counted, never measured
    single: np.ndarray  # grains lying alone
    piece: np.ndarray  # grains cut out of a clump: ~2 % short (the cut, a neighbour's overlap), so no sizes
    broken: np.ndarray  # single grains and pieces much shorter than the typical grain
    shrivelled: np.ndarray  # unbroken single grains and pieces, thin and wrinkled
    whole: np.ndarray  # single grains neither broken nor shrivelled: the sizes
    sound: np.ndarray  # whole grains and pieces of typical length and width: the colours
    grains: int  # grains on the photo (measured): singles, pieces and the grains in each clump (by area)

    @property
    def impurity(self) -> np.ndarray:
        return self.weed_seed | self.chaff


def _log_lightness(colour: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(colour.mean(axis=1), 1e-6))


def _redness(colour: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(colour[:, 0], 1e-6) / np.maximum(colour[:, 2], 1e-6))


def classify_kernels(table: KernelTable) -> KernelClasses:
    """Impurities, clumps, broken, shrivelled and whole grains, each judged relative to the photo's typical grain.

    Relative rules keep the classes right whatever the variety: a weed seed is much darker and smaller than
    the grains beside it, chaff paler and less red (or much thinner) and smooth, a clump much larger or not
    convex, a broken grain much shorter, a shrivelled grain thinner and wrinkled across its length.
    """
    n = len(table)
    measured = ~table.touches_border
    log_len, log_wid = np.log(np.maximum(table.length_mm, 1e-6)), np.log(np.maximum(table.width_mm, 1e-6))
    log_area = np.log(np.maximum(table.area_mm2, 1e-6))
    light, red = _log_lightness(table.colour), _redness(table.colour)

    def relative(reference: np.ndarray) -> tuple[np.ndarray, ...]:
        # The median of the reference objects, then the median of those near it in size: broken pieces,
        # shrivelled grains and clumps in the reference then barely move it.
        typical = reference.copy()
        for _ in range(2):
            centre_len, centre_wid = np.median(log_len[typical]), np.median(log_wid[typical])
            near = (
                reference
                & (np.abs(log_len - centre_len) < TYPICAL_BAND)
                & (np.abs(log_wid - centre_wid) < TYPICAL_BAND)
            )
            if near.sum() < MIN_KERNELS:
                break
            typical = near
        return tuple(v - np.median(v[typical]) for v in (log_len, log_wid, log_area, light, red))

    convex = measured & (table.solidity >= MIN_SOLIDITY)
    alone = convex & ~table.from_clump
    reference = alone if alone.sum() >= MIN_KERNELS else convex
    if not reference.any():
        none = np.zeros(n, dtype=bool)
        return KernelClasses(measured, none, none, measured.copy(), none, none, none, none, none, none, 0)

    rel_len, rel_wid, rel_area, rel_light, rel_red = relative(reference)
    smooth = table.wrinkle < SHRIVELLED_WRINKLE
    weed = measured & (rel_light < np.log(WEED_LIGHTNESS)) & (rel_len < np.log(WEED_LENGTH))
    pale = (rel_red < CHAFF_REDNESS) & (rel_light > np.log(CHAFF_LIGHTNESS))
    # A thin piece cut out of a clump may be a sliver of a grain: only colour says chaff there.
    thin = (rel_wid < np.log(CHAFF_WIDTH)) & ~table.from_clump
    # Thin and smooth: chaff; thin and wrinkled across: a shrivelled grain.
    chaff = measured & ~weed & (pale | (thin & smooth))
    grain = measured & ~weed & ~chaff
    if (grain & reference).sum() >= MIN_KERNELS:  # second pass: the reference is now the photo's grains only
        rel_len, rel_wid, rel_area, rel_light, rel_red = relative(grain & reference)
    clump = grain & ((table.solidity < MIN_SOLIDITY) | (rel_area > CLUMP_AREA) | (rel_len > CLUMP_LENGTH))
    single = grain & ~clump & ~table.from_clump
    piece = grain & ~clump & table.from_clump
    short = rel_len < np.log(BROKEN_LENGTH)
    wrinkled = ~smooth & (rel_wid < np.log(SHRIVELLED_WIDTH))
    # Pieces cut from a clump are whole enough to tell broken and shrivelled grains (and on a crowded tray they
    # are most of the grains), but a little short for sizes.
    counted = single | piece
    broken = counted & short
    shrivelled = counted & ~short & wrinkled
    whole = single & ~short & ~wrinkled
    sound = (whole | (piece & ~short & ~wrinkled)) & (np.abs(rel_wid) < TYPICAL_BAND)
    in_clumps = np.maximum(2, np.round(np.exp(rel_area[clump]))).sum()
    grains = int(single.sum() + piece.sum() + in_clumps)
    return KernelClasses(measured, weed, chaff, clump, single, piece, broken, shrivelled, whole, sound, grains)


def _trimmed_mean(values: np.ndarray) -> float:
    ordered = np.sort(values)
    cut = int(len(ordered) * TRIM)
    return float(ordered[cut : len(ordered) - cut].mean())


def summarise_kernels(table: KernelTable) -> np.ndarray:
    """The photo's feature vector (MORPHOMETRIC_FEATURES order) from its kernel table; FALLBACK_FEATURES if
    it has fewer than MIN_KERNELS whole single grains."""
    classes = classify_kernels(table)
    if classes.whole.sum() < MIN_KERNELS:
        return FALLBACK_FEATURES.copy()
    return _summary(table, classes)


def _colour_grains(table: KernelTable, classes: KernelClasses) -> np.ndarray:
    """The grains whose colour stands for the lot's: sound ones, the less spotted half (whole ones if none)."""
    sound = classes.sound
    if not sound.any():
        return classes.whole
    return sound & (table.dark_share <= np.quantile(table.dark_share[sound], COLOUR_SPOT_QUANTILE))


def _summary(table: KernelTable, classes: KernelClasses) -> np.ndarray:
    """MORPHOMETRIC_FEATURES of a photo with at least one whole single grain."""
    whole, single = classes.whole, classes.single
    sound = _colour_grains(table, classes)
    not_shrivelled = (single | classes.piece) & ~classes.shrivelled
    n_impurity = int(classes.impurity.sum())
    return np.array(
        [
            _trimmed_mean(np.log(table.length_mm[whole])),
            _trimmed_mean(np.log(table.width_mm[whole])),
            _trimmed_mean(_log_lightness(table.colour[sound])),
            _trimmed_mean(_redness(table.colour[sound])),
            float(table.dark_share[not_shrivelled].mean()) if not_shrivelled.any() else 0.0,
            float(classes.broken.sum() / max(1, classes.grains)),
            float(classes.shrivelled.sum() / max(1, classes.grains - int(classes.broken.sum()))),
            float(n_impurity / max(1, n_impurity + classes.grains)),
            float(whole.sum()),
        ]
    )


def measurable(classes: KernelClasses) -> bool:
    """Whether a photo shows enough whole single grains to describe its lot: MIN_KERNELS of them, or, on a
    close-up of fewer objects than that (a single-kernel photo, as labs take them), one."""
    whole = int(classes.whole.sum())
    return whole >= MIN_KERNELS or (whole >= 1 and int(classes.measured.sum()) < MIN_KERNELS)


def _hue_redness(colour: np.ndarray, tray: np.ndarray) -> np.ndarray:
    """How far the hue of each colour relative to a neutral tray (gamma-encoded) lies from yellow towards red:
    pi/3 minus its hue angle about the grey axis (radians; 0 at yellow, pi/3 at red).

    A phone's colour processing scales colours about the grey axis (its colour matrix before the tone curve,
    its saturation after it): that moves log(R / B) several times more than a lot's redness does, but leaves
    the angle about the grey axis. It is read gamma-encoded, where phones apply their saturation.
    """
    return np.pi / 3.0 - hue_angle((np.maximum(colour, 1e-6) / tray) ** (1.0 / HUE_GAMMA))


def photo_measurements(
    table: KernelTable,
    *,
    tray: np.ndarray | None,
    calibrated: bool,
    size_factor: float = 1.0,
    hue_redness: bool = False,
) -> np.ndarray | None:
    """The photo's measurement block (grainproof.measurement_layout.MEASUREMENT_NAMES order), or None when it
    is not `measurable`.

    `tray` is the bare tray's colour in the table's colour space (colours relative to it do not move with the
    light or the exposure), None when the tray is no colour reference (a coloured tray, without the card): the
    tray colour columns are then zero. `hue_redness` reads the redness from the hue (`_hue_redness`), for
    colours balanced on a tray but not calibrated: a phone's saturation moves log(R / B) far more than a lot's
    redness does. `size_factor` turns the table's sizes into the size columns' mm (1 with the card; without it,
    the photo's nominal scale over the scale the kernels were measured at). Without the card (`calibrated`
    False) the columns that need it are zero.
    """
    classes = classify_kernels(table)
    if not measurable(classes):
        return None
    summary = dict(zip(MORPHOMETRIC_FEATURES, _summary(table, classes), strict=True))
    whole, unbroken = classes.whole, (classes.single | classes.piece) & ~classes.broken
    sound = _colour_grains(table, classes)
    reference = np.maximum(np.asarray(tray if tray is not None else np.ones(3), dtype=np.float64), 1e-6)
    values = {
        **summary,
        "log_aspect": _trimmed_mean(np.log(table.length_mm[whole] / np.maximum(table.width_mm[whole], 1e-6))),
        "roundness": _trimmed_mean(table.roundness[whole]),
        "solidity": _trimmed_mean(table.solidity[whole]),
        "eccentricity": _trimmed_mean(table.eccentricity[whole]),
        "size_spread": _robust_sd(np.log(np.maximum(table.area_mm2[unbroken], 1e-9))),
        "tray_lightness": _trimmed_mean(_log_lightness(table.colour[sound]) - float(np.log(reference.mean()))),
        "tray_redness": _trimmed_mean(
            _hue_redness(table.colour[sound], reference)
            if hue_redness
            else _redness(table.colour[sound]) - float(np.log(reference[0] / reference[2]))
        ),
        "log_length": summary["log_length_mm"] + float(np.log(size_factor)),
        "log_width": summary["log_width_mm"] + float(np.log(size_factor)),
    }
    block = np.array([values[name] for name in MEASUREMENT_NAMES], dtype=np.float64)
    if not calibrated:
        block[: len(CARD_MEASUREMENTS)] = 0.0
    if tray is None:
        block[[MEASUREMENT_NAMES.index(name) for name in TRAY_COLOUR_MEASUREMENTS]] = 0.0
    return block


def _robust_sd(values: np.ndarray) -> float:
    """Interquartile range / 1.349 (the SD of a normal sample), 0 below four values."""
    if len(values) < 4:
        return 0.0
    q1, q3 = np.percentile(values, [25, 75])
    return float((q3 - q1) / 1.349)


def photo_morphometrics(reflectance: np.ndarray, mask: np.ndarray, px_per_mm: float) -> np.ndarray:
    """One feature vector (MORPHOMETRIC_FEATURES order, float64, NaN-free) for a calibrated photo.

    `reflectance` is (h, w, 3) linear reflectance on a canvas of `px_per_mm`; `mask` marks kernel pixels.
    With fewer than MIN_KERNELS whole single grains the result is FALLBACK_FEATURES (kernel_count 0):
    the caller should warn and leave the photo out of the lot's mean.
    """
    return summarise_kernels(measure_kernels(reflectance, mask, px_per_mm))
