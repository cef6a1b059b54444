"""The calibration card for users: print it at exact size, and check a test photo of it on the tray.

Every calibrated measurement rests on the card (grainproof.card: two ArUco markers, ten patches), so users
must be able to make one and to know it works before photographing lots:

- `print_card` writes it as PDF or SVG at its physical size (matplotlib, vector), with a printed 50 mm ruler
  to check the printer did not scale it, and the printing instructions beside it;
- `check_card_photo` reads a test photo as the embedding does and says whether the card was found, how well
  (marker fit, scale, each patch's residual after the colour fit, how much of the sample area is in frame),
  whether kernels could be measured, and what to fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grainproof import card
from grainproof.errors import GrainproofError

#: Printing instructions, printed beside the card and shown by `grainproof card print`.
PRINT_INSTRUCTIONS: tuple[str, ...] = (
    "Print on matte white paper (no gloss: glare hides the patches), on a colour printer.",
    'In the print dialog choose "actual size" (100 %), never "fit to page".',
    "Check the ruler with a real one: its 50 mm must measure 50 mm (within 0.5 mm).",
    "Cut along the outline; lay the card flat along the top of the tray, the sample below it.",
    "Reprint it when it fades, stains or curls.",
)
#: Length of the printed ruler (mm) and the page margin around the card and text (mm).
RULER_MM = 50.0
PAGE_MARGIN_MM = 10.0
_TEXT_MM = 34.0
_MM_PER_INCH = 25.4
#: The card's patches are printed as sRGB values relative to the paper's white (its reflectance CARD_WHITE).
FORMATS = ("pdf", "svg")


def _srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB encoding of linear values in [0, 1] (IEC 61966-2-1)."""
    x = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def _print_colour(reflectance: tuple[float, float, float]) -> tuple[float, float, float]:
    r, g, b = _srgb(np.asarray(reflectance) / card.CARD_WHITE)
    return float(r), float(g), float(b)


def print_card(out: Path) -> Path:
    """Write the card at its physical size to `out` (.pdf or .svg); returns the path written.

    The page holds the card with a cutting outline, a 50 mm ruler and the instructions. Sizes are exact:
    matplotlib's figure is the page in inches, its axes span the page in mm, and everything is vector.
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    kind = out.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise GrainproofError(f"Cannot print the card as {out.name}: give an --out file ending in .pdf or .svg.")
    card_width, card_height = card.CARD_SIZE_MM
    page_width = card_width + 2 * PAGE_MARGIN_MM + 60.0
    page_height = card_height + 2 * PAGE_MARGIN_MM + _TEXT_MM
    figure = plt.figure(figsize=(page_width / _MM_PER_INCH, page_height / _MM_PER_INCH))
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_xlim(0, page_width)
    axes.set_ylim(page_height, 0)  # y down, as in card coordinates
    axes.set_axis_off()
    x0, y0 = PAGE_MARGIN_MM, PAGE_MARGIN_MM
    paper = _print_colour((card.CARD_WHITE,) * 3)
    ink = _print_colour((card.CARD_BLACK,) * 3)
    axes.add_patch(Rectangle((x0, y0), card_width, card_height, facecolor=paper, edgecolor="0.6", linewidth=0.3))
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, card.ARUCO_DICTIONARY))
    for marker in card.MARKERS:
        bits = cv2.aruco.generateImageMarker(dictionary, marker.marker_id, 6) < 128  # 4x4 bits and a black border
        cell = marker.side / bits.shape[0]
        for row, column in zip(*np.nonzero(bits), strict=True):
            axes.add_patch(
                Rectangle(
                    (x0 + marker.x + column * cell, y0 + marker.y + row * cell),
                    cell,
                    cell,
                    facecolor=ink,
                    edgecolor=ink,
                    linewidth=0.05,  # a hairline in the fill's colour closes the gaps between cells
                )
            )
    for patch in card.PATCHES:
        axes.add_patch(
            Rectangle(
                (x0 + patch.x, y0 + patch.y),
                patch.side,
                patch.side,
                facecolor=_print_colour(patch.reflectance),
                edgecolor="none",
            )
        )
    _ruler(axes, x0 + card_width + 6.0, y0)
    text_y = y0 + card_height + 6.0
    axes.text(x0, text_y, "grainproof calibration card", fontsize=9, weight="bold", va="top")
    for i, line in enumerate(PRINT_INSTRUCTIONS):
        axes.text(x0, text_y + 5.0 + 4.2 * i, f"{i + 1}. {line}", fontsize=6.5, va="top")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format=kind, facecolor="white")
    plt.close(figure)
    return out


def _ruler(axes: Any, x: float, y: float) -> None:
    """A RULER_MM ruler with mm ticks, every 5 and 10 mm longer and numbered."""
    axes.plot([x, x + RULER_MM], [y, y], color="black", linewidth=0.4)
    for mm in range(int(RULER_MM) + 1):
        length = 3.0 if mm % 10 == 0 else 2.0 if mm % 5 == 0 else 1.2
        axes.plot([x + mm, x + mm], [y, y + length], color="black", linewidth=0.2)
        if mm % 10 == 0:
            axes.text(x + mm, y + 4.0, str(mm), fontsize=5, ha="center", va="top")
    axes.text(x, y + 8.0, f"{RULER_MM:.0f} mm: check with a ruler", fontsize=5, va="top")


@dataclass(frozen=True, slots=True, kw_only=True)
class PatchReading:
    """One printed patch as the photo shows it: its printed reflectance and what the colour fit makes of it."""

    name: str
    printed: tuple[float, float, float]
    read: tuple[float, float, float]
    residual: float  # largest per-channel difference, in reflectance
    clipped: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CardCheck:
    """What a test photo shows: the card (or not), how well it was read, the kernels, and what to fix."""

    photo: str
    card_found: bool
    markers_seen: tuple[int, ...] = ()
    reprojection_px: float | None = None
    px_per_mm: float | None = None
    sample_area_in_frame: float | None = None
    patches: tuple[PatchReading, ...] = ()
    patch_rms: float | None = None
    kernels_measured: bool = False
    kernel_mode: str = ""
    fixes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.card_found and not self.fixes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


#: A card read this well is trusted: residuals (reflectance) of the patches after the colour fit.
MAX_PATCH_RMS = 0.03
MAX_PATCH_RESIDUAL = 0.06
#: Below this resolution at the card (px per mm) kernels are too coarse to measure well (the canvas is 6).
MIN_PX_PER_MM = 4.0
#: The sample area below the card should be in the photo.
MIN_SAMPLE_IN_FRAME = 0.95


def check_card_photo(data: bytes, name: str) -> CardCheck:
    """Read a test photo of the tray as the embedding would, and say what to fix (PhotoError if unusable)."""
    from grainproof.embed.calibration import CardFix, detect_markers, find_card, fit_colour_response, to_card_frame
    from grainproof.embed.embedder import measure_photo
    from grainproof.embed.photos import open_photo, prepare_photo
    from grainproof.measurement_layout import MEASURED_WITH_CARD, NETWORK_ONLY, measurement_strata

    prepared = prepare_photo(data, name)
    measured, notes = measure_photo(prepared)
    stratum = int(measurement_strata(measured[None, :], len(measured))[0])
    image = open_photo(data, name, min_side=64, max_pixels=50_000_000)
    upright = np.asarray(image, dtype=np.float32) / 255.0
    fix: CardFix | None = find_card(upright)
    kernel_mode = {
        MEASURED_WITH_CARD: "measured with the card (mm and reflectance)",
        NETWORK_ONLY: "not measured",
    }.get(stratum, "measured without the card (shapes, shares and colours relative to the tray)")
    fixes: list[str] = []
    if fix is None:
        seen = set(detect_markers(upright))
        missing = [m.marker_id for m in card.MARKERS if m.marker_id not in seen]
        fixes.append(
            "No card found"
            + (f" (marker {', '.join(map(str, missing))} not seen)" if seen else "")
            + ": lay the printed card flat along the top of the tray, both black squares in the frame, "
            "without glare or shadow on them."
        )
        if stratum == NETWORK_ONLY:
            fixes.append(_kernel_fix(notes))
        return CardCheck(
            photo=name,
            card_found=False,
            markers_seen=tuple(sorted(seen)),
            kernels_measured=stratum != NETWORK_ONLY,
            kernel_mode=kernel_mode,
            fixes=tuple(fixes),
        )
    frame = to_card_frame(upright, fix)
    response = fit_colour_response(frame.patches)
    read = response.to_reflectance(frame.patches.astype(np.float32))
    readings = []
    for patch, seen_value, value in zip(card.PATCHES, frame.patches, read, strict=True):
        printed = np.asarray(patch.reflectance)
        readings.append(
            PatchReading(
                name=patch.name,
                printed=patch.reflectance,
                read=(float(value[0]), float(value[1]), float(value[2])),
                residual=float(np.abs(value - printed).max()),
                clipped=bool(seen_value.max() >= 0.985),
            )
        )
    rms = float(np.sqrt(np.mean([(np.asarray(r.read) - np.asarray(r.printed)) ** 2 for r in readings])))
    in_frame = float(frame.sample(frame.inside).mean())
    px_per_mm = fix.px_per_mm()
    if any(r.clipped for r in readings):
        fixes.append("Some patches are overexposed: avoid direct light or glare on the card, or lower the exposure.")
    if rms > MAX_PATCH_RMS or max(r.residual for r in readings) > MAX_PATCH_RESIDUAL:
        worst = max(readings, key=lambda r: r.residual)
        fixes.append(
            f"The patches read poorly (worst: {worst.name}, off by {worst.residual:.3f}): print the card again on "
            "matte paper with a colour printer at actual size, and light the tray evenly."
        )
    if px_per_mm < MIN_PX_PER_MM:
        fixes.append(
            f"The card spans only {px_per_mm:.1f} px per mm: hold the phone closer or take photos at full resolution."
        )
    if in_frame < MIN_SAMPLE_IN_FRAME:
        fixes.append(
            f"Only {100 * in_frame:.0f} % of the sample area below the card is in the photo: step back or zoom out."
        )
    if stratum == NETWORK_ONLY:
        fixes.append(_kernel_fix(notes))
    return CardCheck(
        photo=name,
        card_found=True,
        markers_seen=tuple(m.marker_id for m in card.MARKERS),
        reprojection_px=fix.reprojection_px,
        px_per_mm=px_per_mm,
        sample_area_in_frame=in_frame,
        patches=tuple(readings),
        patch_rms=rms,
        kernels_measured=stratum != NETWORK_ONLY,
        kernel_mode=kernel_mode,
        fixes=tuple(fixes),
    )


def _kernel_fix(notes: tuple[str, ...]) -> str:
    """What to do when no kernel could be measured, from the embedding's own notes on the photo."""
    if any("barely stand out" in n for n in notes):
        return (
            "Kernels barely stand out from the tray: use a plain tray of a contrasting colour (white, grey or black)."
        )
    return "Too few separate kernels to measure: spread the sample in one layer so kernels do not touch."
