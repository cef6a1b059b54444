"""GS1 identifiers: GTIN check digits, batch/lot numbers (AI 10) and GS1 Digital Link URIs.

A lot number travels in EPCIS as AI 10 of an LGTIN, so it must be what GS1 allows there: at most
20 characters of the "AI encodable character set 82" (GS1 General Specifications, figure 7.11-1).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from grainproof.errors import GrainproofError
from grainproof.settings import Settings

#: GS1 AI encodable character set 82: digits, letters and these 20 signs.
_CHARACTER_SET_82 = re.compile(r"""^[!"%&'()*+,\-./0-9:;<=>?A-Z_a-z]*$""")
MAX_LOT_CHARS = 20
GTIN_SETTING = "GRAINPROOF_GS1_GTIN"


class Gs1ConfigurationError(GrainproofError):
    """The service has no usable GTIN for EPCIS export (GRAINPROOF_GS1_GTIN is not set or not a GTIN)."""

    status_code = 409


def gtin_check_digit_ok(gtin: str) -> bool:
    """The GS1 mod-10 check digit of a GTIN of 8, 12, 13 or 14 digits is right."""
    digits = [int(c) for c in gtin]
    # Weights 3, 1, 3, ... from the digit left of the check digit, whatever the length.
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == digits[-1]


def gtin14(value: str) -> str | None:
    """The GTIN-14 form of a GTIN-8/12/13/14 (zeros on the left), or None when it is not a valid GTIN."""
    value = value.strip()
    if not re.fullmatch(r"\d{8}|\d{12,14}", value) or not gtin_check_digit_ok(value):
        return None
    return value.rjust(14, "0")


def lot_problem(lot: str) -> str | None:
    """Why `lot` cannot be a GS1 batch/lot number (AI 10), or None when it can."""
    if not lot:
        return "it is empty"
    if len(lot) > MAX_LOT_CHARS:
        return f"it has {len(lot)} characters, GS1 allows at most {MAX_LOT_CHARS}"
    if not _CHARACTER_SET_82.match(lot):
        bad = "".join(sorted({c for c in lot if not _CHARACTER_SET_82.match(c)}))
        return f"it has characters outside GS1's character set 82 ({bad!r}; spaces are not allowed either)"
    return None


def product_uri(gtin: str, lot: str | None = None) -> str:
    """The product (or the lot, AI 10, when it is a valid GS1 lot number) as a GS1 Digital Link URI."""
    uri = f"https://id.gs1.org/01/{gtin}"
    if lot is not None and lot_problem(lot) is None:
        uri += f"/10/{quote(lot, safe='')}"
    return uri


def configured_gtin(settings: Settings) -> str:
    """The service's GTIN-14 for lots whose claim names none; Gs1ConfigurationError naming the setting otherwise."""
    if not settings.gs1_gtin:
        raise Gs1ConfigurationError(
            f"EPCIS export needs the GTIN of your product: set {GTIN_SETTING} (8 to 14 digits with a valid "
            "check digit), or send `gtin` in each claim. Nothing is exported with a made-up GTIN."
        )
    gtin = gtin14(settings.gs1_gtin)
    if gtin is None:
        raise Gs1ConfigurationError(
            f"{GTIN_SETTING}={settings.gs1_gtin!r} is not a GTIN: give 8, 12, 13 or 14 digits with a valid "
            "GS1 check digit."
        )
    return gtin
