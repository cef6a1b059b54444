"""The grainproof calibration card: the printed card that lies on every tray, in millimetres and reflectances.

Intake protocol: the operator lays the card along the top edge of the tray and spreads the sample below
it. The card is what makes photos from different phones and lights comparable, as colour charts do in
seed phenotyping: its two ArUco markers give the card's position, orientation and scale (a homography
from card millimetres to photo pixels, so kernel sizes come out in mm), its grey patches give each
colour channel's response curve (light strength, white balance and the phone's tone curve), and its
colour patches the cross-channel mixing (the phone's colour matrix and saturation).

This module is only the layout, shared by the simulator (which prints it) and the preprocessing (which
reads it). Card coordinates: origin at the card's top-left corner, x to the right, y down, in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Card size (width, height) in mm.
CARD_SIZE_MM = (64.0, 16.0)
#: Reflectance of the card's white paper and of the markers' black ink.
CARD_WHITE = 0.88
CARD_BLACK = 0.04
#: OpenCV ArUco dictionary of the markers (cv2.aruco.DICT_4X4_50).
ARUCO_DICTIONARY = "DICT_4X4_50"


@dataclass(frozen=True, slots=True, kw_only=True)
class Marker:
    """One ArUco marker: its id and its square (top-left corner and side, mm, black border included)."""

    marker_id: int
    x: float
    y: float
    side: float

    def corners(self) -> tuple[tuple[float, float], ...]:
        """Corners in OpenCV's order (top-left, top-right, bottom-right, bottom-left), card mm."""
        x, y, s = self.x, self.y, self.side
        return ((x, y), (x + s, y), (x + s, y + s), (x, y + s))


@dataclass(frozen=True, slots=True, kw_only=True)
class Patch:
    """A printed patch: its square (top-left corner and side, mm) and its linear reflectance per channel."""

    name: str
    x: float
    y: float
    side: float
    reflectance: tuple[float, float, float]

    @property
    def neutral(self) -> bool:
        return max(self.reflectance) - min(self.reflectance) < 1e-9


MARKERS: tuple[Marker, ...] = (
    Marker(marker_id=7, x=2.0, y=2.0, side=12.0),
    Marker(marker_id=23, x=50.0, y=2.0, side=12.0),
)

_PATCH_SIDE = 6.0
_PATCH_COLUMNS = tuple(16.2 + 6.4 * c for c in range(5))
_PATCH_ROWS = (1.8, 8.2)

#: Neutral patches from near-white to near-black, then colours around grain tones (wheat, barley straw,
#: red-brown bran) and one blue that keeps the colour-matrix fit well conditioned.
_PATCH_VALUES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("grey-88", (0.88, 0.88, 0.88)),
    ("grey-60", (0.60, 0.60, 0.60)),
    ("grey-36", (0.36, 0.36, 0.36)),
    ("grey-20", (0.20, 0.20, 0.20)),
    ("grey-10", (0.10, 0.10, 0.10)),
    ("grey-04", (0.045, 0.045, 0.045)),
    ("wheat", (0.56, 0.36, 0.17)),
    ("straw", (0.66, 0.52, 0.29)),
    ("bran", (0.40, 0.20, 0.10)),
    ("blue", (0.15, 0.25, 0.50)),
)

PATCHES: tuple[Patch, ...] = tuple(
    Patch(name=name, x=_PATCH_COLUMNS[i % 5], y=_PATCH_ROWS[i // 5], side=_PATCH_SIDE, reflectance=value)
    for i, (name, value) in enumerate(_PATCH_VALUES)
)

#: Where the sample lies, in card mm: a band below the card, as wide as a tray (the canvas the network sees).
SAMPLE_AREA_MM = (CARD_SIZE_MM[0] / 2 - 50.67, CARD_SIZE_MM[1] + 2.0, 101.33, 53.33)  # x0, y0, width, height
