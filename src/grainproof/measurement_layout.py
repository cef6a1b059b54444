"""The kernel measurements that lead a lot vector: which need the calibration card, which do not.

A vector whose backbone id carries "+kernels:N" (`domain.with_measured_features`) starts with N kernel
measurements. With the current N (`len(MEASUREMENT_NAMES)`) they come in four groups, in this order:

- `CARD_MEASUREMENTS`: sizes in mm and colours in reflectance. Only the card gives them.
- `SCALE_FREE_MEASUREMENTS`: shape ratios, the spread of sizes, the shares of broken, shrivelled, weathered
  kernels and impurities: measured with the card or without it.
- `TRAY_COLOUR_MEASUREMENTS`: colour relative to the tray, measured where the tray is a colour reference: with
  the card, or on a neutral tray (not on a coloured one, whose hue is not the light's).
- `SIZE_MEASUREMENTS`: log length and width on a scale comparable across phones: mm with the card; without
  it, mm at the photo's nominal scale (its field of view), which `reference.phone_scale` corrects per phone.

A group that could not be measured is written as all zeros (none of its columns is exactly 0 when
measured: an aspect ratio is above 1, a log length of a real kernel is not 0). So a vector tells its capture
mode by itself: card group present, MEASURED_WITH_CARD; card group zero and the scale-free group present,
MEASURED_WITHOUT_CARD; nothing, NETWORK_ONLY. Each mode is its own calibration stratum (Mondrian conformal:
a lot is ranked among lots measured as it was). A block of any other width (vectors embedded before the
card-free measurements) is one group that needs the card, as it then did.

Pure numpy: reference/ and embed/ both import this module, it imports neither.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: Need the card: kernel sizes in mm and colours in linear reflectance.
CARD_MEASUREMENTS: tuple[str, ...] = (
    "log_length_mm",  # whole grains lying alone: trimmed mean of log length (mm)
    "log_width_mm",  # the same grains: trimmed mean of log width (mm)
    "log_lightness",  # sound grains: trimmed mean of log mean-RGB reflectance of the interior
    "redness",  # the same grains: trimmed mean of log(R / B) reflectance of the interior
)
#: Need no scale and no card: ratios of sizes, shares judged against the photo's typical grain, and colour
#: as ratios to the tray, which a change of light or exposure does not move.
SCALE_FREE_MEASUREMENTS: tuple[str, ...] = (
    "log_aspect",  # whole grains: trimmed mean of log(length / width)
    "roundness",  # whole grains: trimmed mean of 4 area / (pi length^2) (ImageJ's "round")
    "solidity",  # whole grains: trimmed mean of area / convex hull area
    "eccentricity",  # whole grains: trimmed mean of the eccentricity of the ellipse of equal second moments
    "size_spread",  # unbroken grains: robust SD of log area (a coefficient of variation of kernel size)
    "broken_share",  # grains shorter than BROKEN_LENGTH x the typical grain, among all grains
    "shrivelled_share",  # unbroken grains thin and wrinkled, among unbroken grains
    "weathering",  # grains not shrivelled: mean share of the interior in dark spots
    "impurity_share",  # objects that are not grain (weed seeds, chaff), among all objects
)
#: Colour relative to a neutral tray, which a change of light or exposure does not move. Without the card the
#: redness is read from the hue, an angle about the grey axis, which a phone's saturation (a scaling about that
#: axis) does not move either.
TRAY_COLOUR_MEASUREMENTS: tuple[str, ...] = (
    "tray_lightness",  # sound grains: trimmed mean of log(luminance / the tray's luminance)
    "tray_redness",  # sound grains: trimmed mean of log(R / B) over the tray's with the card (or on a background
    #                  returning no light); on a lit tray without it, of pi/3 minus the hue angle (radians) of
    #                  their colour relative to the tray, gamma-encoded
)
#: Log length and width of whole grains, in mm (card) or in mm at the photo's nominal scale (no card).
SIZE_MEASUREMENTS: tuple[str, ...] = ("log_length", "log_width")
#: The measurement block of vectors embedded today, in order.
MEASUREMENT_NAMES: tuple[str, ...] = (
    CARD_MEASUREMENTS + SCALE_FREE_MEASUREMENTS + TRAY_COLOUR_MEASUREMENTS + SIZE_MEASUREMENTS
)

#: Calibration strata. MEASURED_WITH_CARD and NETWORK_ONLY keep the values reference models stored before.
MEASURED_WITH_CARD, NETWORK_ONLY, MEASURED_WITHOUT_CARD = 0, 1, 2


@dataclass(frozen=True, slots=True)
class MeasurementLayout:
    """Widths of the groups of a measurement block: card-only, scale-free, phone-scaled sizes (in that order)."""

    card: int
    scale_free: int = 0
    tray_colour: int = 0
    size: int = 0

    @property
    def width(self) -> int:
        return self.card + self.scale_free + self.tray_colour + self.size

    @property
    def groups(self) -> tuple[slice, ...]:
        """Column slices of the groups this layout has (empty groups left out)."""
        bounds = np.cumsum([0, self.card, self.scale_free, self.tray_colour, self.size])
        return tuple(slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a)

    @property
    def size_columns(self) -> slice:
        """Columns of the phone-scaled sizes (empty in a legacy layout)."""
        start = self.card + self.scale_free + self.tray_colour
        return slice(start, start + self.size)


CURRENT_LAYOUT = MeasurementLayout(
    card=len(CARD_MEASUREMENTS),
    scale_free=len(SCALE_FREE_MEASUREMENTS),
    tray_colour=len(TRAY_COLOUR_MEASUREMENTS),
    size=len(SIZE_MEASUREMENTS),
)


def measurement_layout(width: int) -> MeasurementLayout:
    """The layout of a measurement block `width` columns wide: today's, or one group that needs the card."""
    return CURRENT_LAYOUT if width == CURRENT_LAYOUT.width else MeasurementLayout(card=width)


def _present(block: np.ndarray, columns: slice) -> np.ndarray:
    return np.asarray(np.any(block[:, columns] != 0, axis=1))


def measurement_strata(vectors: np.ndarray, width: int) -> np.ndarray:
    """(n,) int8 calibration stratum of each vector whose first `width` features are kernel measurements."""
    x = np.asarray(vectors)
    strata = np.full(len(x), MEASURED_WITH_CARD, dtype=np.int8)
    if width == 0:
        return strata
    layout = measurement_layout(width)
    card = _present(x, slice(0, layout.card))
    anything = _present(x, slice(0, layout.width))
    strata[~card] = MEASURED_WITHOUT_CARD
    strata[~anything] = NETWORK_ONLY
    return strata


def missing_measurements(vectors: np.ndarray, width: int) -> np.ndarray:
    """(n, width) bool: the measurement columns of each vector whose group was not measured."""
    x = np.asarray(vectors)
    missing = np.zeros((len(x), width), dtype=bool)
    for columns in measurement_layout(width).groups:
        missing[:, columns] = ~_present(x, columns)[:, None]
    return missing


def measured_means(vectors: np.ndarray, width: int) -> np.ndarray:
    """(width,) mean of each measurement column over the vectors that measured it (0 where none did)."""
    x = np.asarray(vectors, dtype=np.float64)[:, :width]
    present = ~missing_measurements(x, width)
    counts = present.sum(axis=0)
    return np.where(counts > 0, np.where(present, x, 0.0).sum(axis=0) / np.maximum(counts, 1), 0.0)


def fill_missing_measurements(vectors: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """The vectors (float64) with each measurement group they lack set to `fill` (its reference mean), so
    missing evidence counts for nothing either way rather than as kernels of size and colour zero."""
    x = np.asarray(vectors, dtype=np.float64)
    width = len(fill)
    missing = missing_measurements(x, width)
    if not missing.any():
        return x
    x = x.copy()
    x[:, :width] = np.where(missing, np.asarray(fill, dtype=np.float64)[None, :], x[:, :width])
    return x


def combine_photo_measurements(blocks: np.ndarray) -> np.ndarray:
    """A lot's measurement block (width,) from its photos' blocks (photos, width): per group, the median over
    the photos that measured it (a photo without the card does not pull the lot's mm sizes to zero, and one
    badly segmented photo does not move the lot); zeros where no photo did. Sizes come from the photos with the
    card when there are any."""
    x = np.asarray(blocks, dtype=np.float64)
    layout = measurement_layout(x.shape[1])
    with_card = _present(x, slice(0, layout.card))
    out = np.zeros(x.shape[1])
    for columns in layout.groups:
        rows = _present(x, columns)
        if columns == layout.size_columns and with_card.any():
            rows &= with_card  # sizes the card scaled, not a nominal scale, where the lot has them
        if rows.any():
            out[columns] = np.median(x[rows, columns], axis=0)
    return out
