"""Per-phone scale of kernel sizes measured without the card, learned from the reference lots.

Without the card a kernel's size is known in pixels only; embed turns it into mm at the photo's nominal
scale (the protocol's field of view, or the EXIF focal length at a fixed distance), which is off by each
phone's zoom and framing habits: one factor per phone, the same for every lot it photographs. Lots of one
cell (variety, origin, season) photographed with different phones share their kernels' true size, so the
factor is the phone's offset in a two-way fit, log size = cell + phone, over the reference lots without
the card. A phone with too few such lots, or never seen, is not guessed at: its lots take the claimed
variety's typical size, so their size says nothing either way, and their verdicts say so.

Pure numpy over the SIZE_MEASUREMENTS columns of grainproof.measurement_layout: fit on (vectors, phones,
cells), apply to (vectors, phones, varieties). Card lots (sizes already in mm) and lots without
measurements pass through unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grainproof.measurement_layout import MEASURED_WITHOUT_CARD, measurement_layout, measurement_strata

#: Per-lot labels: a list of strings or a numpy string array.
Labels = Sequence[str] | np.ndarray
#: A phone needs this many reference lots without the card, in cells shared with other phones, for its scale.
MIN_PHONE_LOTS = 5
#: Rounds of the alternating two-way fit (it settles in a handful; medians keep a stray lot from moving it).
_FIT_ROUNDS = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneScale:
    """What a reference knows about sizes without the card: each phone's log scale offset, each variety's
    typical (phone-corrected) log sizes, and the width of the measurement block it applies to."""

    measured: int = 0
    offsets: dict[str, float] = field(default_factory=dict)
    typical: dict[str, list[float]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "measured": self.measured,
            "offsets": dict(sorted(self.offsets.items())),
            "typical": dict(sorted(self.typical.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhoneScale:
        return cls(
            measured=int(data.get("measured", 0)),
            offsets={str(k): float(v) for k, v in data.get("offsets", {}).items()},
            typical={str(k): [float(x) for x in v] for k, v in data.get("typical", {}).items()},
        )


def _uncarded(vectors: np.ndarray, measured: int) -> np.ndarray:
    return np.asarray(measurement_strata(vectors, measured) == MEASURED_WITHOUT_CARD)


def cell_labels(varieties: np.ndarray, origins: np.ndarray, seasons: np.ndarray) -> np.ndarray:
    """One string per lot naming its cell (variety, origin, season), for `fit_phone_scale`."""
    return np.char.add(
        np.char.add(np.char.add(varieties.astype(str), "|"), origins.astype(str) + "|"), seasons.astype(str)
    )


def fit_phone_scale(
    vectors: np.ndarray,
    phones: Labels,
    varieties: Labels,
    *,
    cells: Labels | None = None,
    measured: int,
) -> PhoneScale:
    """The phone scales and typical sizes from reference vectors (n, d) whose first `measured` features are
    kernel measurements, with each lot's phone ("" unknown: a phone like any other), variety and cell
    (default: the variety; `cell_labels` gives variety, origin and season, which a phone's lots cannot bias)."""
    size = measurement_layout(measured).size_columns
    x = np.asarray(vectors, dtype=np.float64)
    if size.stop == size.start or not len(x):
        return PhoneScale(measured=measured)
    rows = np.flatnonzero(_uncarded(x, measured))
    if not len(rows):
        return PhoneScale(measured=measured)
    # One scale per phone moves log length and log width alike: fit their mean.
    log_size = x[rows, size].mean(axis=1)
    phone_names, phone_of = np.unique(np.asarray(phones, dtype=str)[rows], return_inverse=True)
    _, cell_of = np.unique(np.asarray(varieties if cells is None else cells, dtype=str)[rows], return_inverse=True)
    offset = np.zeros(len(phone_names))
    cell_level = np.zeros(int(cell_of.max()) + 1)
    for _ in range(_FIT_ROUNDS):
        cell_level = _group_median(log_size - offset[phone_of], cell_of, len(cell_level))
        offset = _group_median(log_size - cell_level[cell_of], phone_of, len(phone_names))
        offset -= np.median(offset)
    # Only lots sharing their cell with another phone's lots say anything about their phone's scale.
    shared = np.array([len(set(phone_of[cell_of == c].tolist())) > 1 for c in range(len(cell_level))])
    informative = np.bincount(phone_of[shared[cell_of]], minlength=len(phone_names))
    offsets = {str(name): float(offset[i]) for i, name in enumerate(phone_names) if informative[i] >= MIN_PHONE_LOTS}
    scaled = x[rows, size] - np.array([offsets.get(str(phone_names[p]), np.nan) for p in phone_of])[:, None]
    variety_of = np.asarray(varieties, dtype=str)[rows]
    typical = {
        str(v): np.nanmean(scaled[variety_of == v], axis=0).tolist()
        for v in np.unique(variety_of)
        if np.isfinite(scaled[variety_of == v]).all(axis=1).any()
    }
    return PhoneScale(measured=measured, offsets=offsets, typical=typical)


def _group_median(values: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Median of `values` within each group 0..groups-1 (0 for an empty group)."""
    order = np.argsort(group, kind="stable")
    sorted_groups, sorted_values = group[order], values[order]
    bounds = np.searchsorted(sorted_groups, np.arange(groups + 1))
    return np.array([float(np.median(sorted_values[a:b])) if b > a else 0.0 for a, b in itertools.pairwise(bounds)])


def apply_phone_scale(
    vectors: np.ndarray, phones: Labels, varieties: Labels, scale: PhoneScale | None
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors with the sizes of lots without the card put on the reference's scale, whether each lot's
    phone has a scale). A lot whose phone has none takes its variety's typical size (nothing either way);
    card lots, unmeasured lots and references without sizes pass through, counted as seen."""
    x = np.asarray(vectors, dtype=np.float64)
    seen = np.ones(len(x), dtype=bool)
    if scale is None or not scale.measured:
        return x, seen
    size = measurement_layout(scale.measured).size_columns
    rows = np.flatnonzero(_uncarded(x, scale.measured)) if size.stop > size.start else np.zeros(0, dtype=int)
    if not len(rows):
        return x, seen
    x = x.copy()
    phone_list = np.asarray(phones, dtype=str)
    variety_list = np.asarray(varieties, dtype=str)
    for row in rows:
        offset = scale.offsets.get(str(phone_list[row]))
        if offset is not None:
            x[row, size] -= offset
            continue
        seen[row] = False
        typical = scale.typical.get(str(variety_list[row]))
        if typical is not None:
            x[row, size] = typical
    return x, seen


@dataclass(frozen=True, slots=True)
class PhoneScaledVectors:
    """A VectorSource (reference.vectors) whose rows come out with `apply_phone_scale` done: what the
    builder projects, chunk by chunk, so the raw vectors are still read only once."""

    source: Any  # VectorSource
    phones: np.ndarray
    varieties: np.ndarray
    scale: PhoneScale

    @property
    def dim(self) -> int:
        return int(self.source.dim)

    def __len__(self) -> int:
        return len(self.source)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return apply_phone_scale(self.source.take(rows), self.phones[rows], self.varieties[rows], self.scale)[0]
