"""Species and varieties: what a kernel of each variety looks like before the environment acts on it.

The variety sets the kernel's size and outline, its colour and its surface (husk veins for barley,
a smooth bran coat and a crease for wheat). Differences between varieties are deliberately much
larger than the shifts provenance and season cause (see traits.py), as they are in real grain.
"""

from __future__ import annotations

from dataclasses import dataclass

from grainproof.errors import GrainproofError


@dataclass(frozen=True, slots=True, kw_only=True)
class Variety:
    """Kernel appearance of one variety, in millimetres and linear-RGB reflectance (0..1)."""

    species: str
    name: str
    length_mm: float
    width_mm: float
    #: How sharply the kernel narrows towards its ends: 0 = ellipse, 1 = pointed (barley awn end).
    tip_taper: float
    #: Depth of the longitudinal crease (wheat) as a darkening factor 0..1.
    crease_depth: float
    #: Strength of husk veins (barley lemma) as a reflectance modulation 0..1.
    husk_veins: float
    #: Linear-RGB reflectance of a sound kernel.
    colour: tuple[float, float, float]
    #: Share of lots of this species that are of this variety (market share).
    popularity: float

    def __post_init__(self) -> None:
        if self.length_mm <= self.width_mm or self.width_mm <= 0:
            raise ValueError(f"{self.name}: a kernel must be longer than it is wide")
        if not all(0.0 < c < 1.0 for c in self.colour):
            raise ValueError(f"{self.name}: reflectance must lie in (0, 1)")
        for name in ("tip_taper", "crease_depth", "husk_veins"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{self.name}: {name} must lie in [0, 1]")
        if self.popularity <= 0:
            raise ValueError(f"{self.name}: popularity must be positive")


# Invented but plausible varieties: French soft wheat is ~6-7.5 mm long and golden to red-brown;
# barley is longer (8-10 mm), pointed, paler, with visible husk veins. Two-row winter/spring types
# differ in plumpness. Names are fictional so nobody mistakes these numbers for measurements.
VARIETIES: tuple[Variety, ...] = (
    Variety(species="soft_wheat", name="aurelio", length_mm=6.6, width_mm=3.4, tip_taper=0.15,
            crease_depth=0.45, husk_veins=0.0, colour=(0.56, 0.36, 0.17), popularity=0.35),
    Variety(species="soft_wheat", name="bergamo", length_mm=7.2, width_mm=3.2, tip_taper=0.25,
            crease_depth=0.35, husk_veins=0.0, colour=(0.50, 0.29, 0.13), popularity=0.30),
    Variety(species="soft_wheat", name="calisto", length_mm=6.1, width_mm=3.6, tip_taper=0.10,
            crease_depth=0.55, husk_veins=0.0, colour=(0.62, 0.43, 0.22), popularity=0.20),
    Variety(species="soft_wheat", name="duranza", length_mm=6.9, width_mm=3.0, tip_taper=0.30,
            crease_depth=0.40, husk_veins=0.0, colour=(0.46, 0.27, 0.14), popularity=0.15),
    Variety(species="barley", name="etoile", length_mm=8.8, width_mm=3.7, tip_taper=0.65,
            crease_depth=0.15, husk_veins=0.35, colour=(0.66, 0.52, 0.29), popularity=0.35),
    Variety(species="barley", name="fandango", length_mm=9.4, width_mm=3.5, tip_taper=0.75,
            crease_depth=0.10, husk_veins=0.45, colour=(0.70, 0.57, 0.34), popularity=0.30),
    Variety(species="barley", name="gaia", length_mm=8.2, width_mm=3.9, tip_taper=0.55,
            crease_depth=0.20, husk_veins=0.25, colour=(0.60, 0.46, 0.24), popularity=0.20),
    Variety(species="barley", name="hermine", length_mm=9.0, width_mm=3.3, tip_taper=0.85,
            crease_depth=0.12, husk_veins=0.55, colour=(0.72, 0.61, 0.40), popularity=0.15),
)  # fmt: skip

SPECIES: tuple[str, ...] = ("barley", "soft_wheat")


def varieties_of(species: str) -> tuple[Variety, ...]:
    """The varieties of one species; GrainproofError naming the known species otherwise."""
    found = tuple(v for v in VARIETIES if v.species == species)
    if not found:
        raise GrainproofError(f"Unknown species {species!r}; the simulator knows {', '.join(SPECIES)}.")
    return found


def get_variety(species: str, name: str) -> Variety:
    """One variety by species and name; GrainproofError listing the species' varieties otherwise."""
    for variety in varieties_of(species):
        if variety.name == name:
            return variety
    known = ", ".join(v.name for v in varieties_of(species))
    raise GrainproofError(f"Unknown {species} variety {name!r}; known varieties: {known}.")
