"""Geography: region sets, point/polygon -> region, origin claim validation, provenance zones, maps.

`load_region_set("fr-departements")` is the entry point most callers need; see docs/geography.md.
`ProvenanceZones` (scikit-learn, hdbscan) and `draw_region_map` (matplotlib) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grainproof.geo.claims import ResolvedOrigin, validate_origin
from grainproof.geo.regions import (
    BUILTIN_REGION_SETS,
    RegionSet,
    haversine_km,
    import_region_set,
    list_region_sets,
    load_region_set,
)

if TYPE_CHECKING:
    from grainproof.geo.maps import draw_region_map
    from grainproof.geo.zones import ProvenanceZones

__all__ = [
    "BUILTIN_REGION_SETS",
    "ProvenanceZones",
    "RegionSet",
    "ResolvedOrigin",
    "draw_region_map",
    "haversine_km",
    "import_region_set",
    "list_region_sets",
    "load_region_set",
    "validate_origin",
]


def __getattr__(name: str) -> Any:
    """Import the heavier parts only when asked for, so `import grainproof.geo` stays quick."""
    if name == "ProvenanceZones":
        from grainproof.geo.zones import ProvenanceZones

        return ProvenanceZones
    if name == "draw_region_map":
        from grainproof.geo.maps import draw_region_map

        return draw_region_map
    raise AttributeError(f"module 'grainproof.geo' has no attribute {name!r}")
