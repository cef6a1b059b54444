"""The printable card: printed to PDF and SVG at exact size, then rasterised, photographed and checked."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pypdfium2
import pytest
from typer.testing import CliRunner

from grainproof import card
from grainproof.cli import app
from grainproof.errors import GrainproofError
from grainproof.services.card import PAGE_MARGIN_MM, check_card_photo, print_card
from synthetic_trays import LIGHTS, PHOTO_PX_PER_MM, simulated_lot_photo

#: Resolution the PDF is rasterised at (px per mm; about 400 dpi, a photo printer's), then photographed at
#: a mid-range phone's 8 px per mm.
PRINT_PX_PER_MM = 16.0
#: A printed card must read this well: scale within 1 %, patches (reflectance) after the colour fit.
MAX_SCALE_ERROR = 0.01
MAX_PATCH_RMS = 0.02
MAX_PATCH_RESIDUAL = 0.04


def _printed_card(pdf: Path) -> np.ndarray:
    """The card cut out of the rasterised PDF, as reflectance (the paper's white is card.CARD_WHITE)."""
    page = pypdfium2.PdfDocument(str(pdf))[0]
    pixels = np.asarray(page.render(scale=PRINT_PX_PER_MM * 25.4 / 72).to_pil().convert("RGB"), dtype=np.float64)
    pixels /= 255.0
    top = round(PAGE_MARGIN_MM * PRINT_PX_PER_MM)
    width, height = (round(side * PRINT_PX_PER_MM) for side in card.CARD_SIZE_MM)
    srgb = pixels[top : top + height, top : top + width]
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return (linear * card.CARD_WHITE).astype(np.float32)


def test_the_card_prints_at_its_physical_size_to_pdf_and_svg(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["card", "print", "--out", str(tmp_path / "card.pdf")])
    assert result.exit_code == 0, result.output
    assert "actual size" in result.output and "matte" in result.output
    page = pypdfium2.PdfDocument(str(tmp_path / "card.pdf"))[0]
    width_mm, height_mm = (points / 72 * 25.4 for points in page.get_size())
    svg = ET.parse(print_card(tmp_path / "card.svg")).getroot()
    # The SVG is the same page, in points.
    assert float(svg.get("width", "0").removesuffix("pt")) == pytest.approx(width_mm / 25.4 * 72, rel=1e-4)
    # The card and a 50 mm ruler beside it, with room for the instructions below.
    assert width_mm == pytest.approx(card.CARD_SIZE_MM[0] + 2 * PAGE_MARGIN_MM + 60.0, abs=0.01)
    assert height_mm > card.CARD_SIZE_MM[1] + 2 * PAGE_MARGIN_MM
    with pytest.raises(GrainproofError, match=r"\.pdf or \.svg"):
        print_card(tmp_path / "card.png")


@pytest.mark.parametrize("light", sorted(LIGHTS))
def test_a_photographed_print_of_the_card_reads_true(tmp_path: Path, light: str) -> None:
    texture = _printed_card(print_card(tmp_path / "card.pdf"))
    photo = tmp_path / "tray.jpg"
    photo.write_bytes(simulated_lot_photo(tray="white_plastic", light=light, card_texture=texture))
    check = check_card_photo(photo.read_bytes(), photo.name)
    assert check.card_found and check.ok, check.fixes
    assert check.px_per_mm is not None and abs(check.px_per_mm / PHOTO_PX_PER_MM - 1) < MAX_SCALE_ERROR
    assert check.patch_rms is not None and check.patch_rms <= MAX_PATCH_RMS
    assert max(p.residual for p in check.patches) <= MAX_PATCH_RESIDUAL
    assert check.kernel_mode.startswith("measured with the card")
    result = CliRunner().invoke(app, ["card", "check", str(photo)])
    assert result.exit_code == 0 and "card found" in result.output and "reads well" in result.output


def test_a_photo_without_the_card_is_told_to_add_it() -> None:
    check = check_card_photo(simulated_lot_photo(tray="white_plastic", light="daylight"), "tray.jpg")
    assert not check.card_found and not check.ok
    assert check.kernels_measured and check.kernel_mode.startswith("measured without the card")
    assert any("lay the printed card" in fix for fix in check.fixes)
