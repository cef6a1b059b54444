"""The synthetic grain world: latent traits, phones and lighting, tray rendering, fraud injection.

`simulate_world(WorldConfig(...), out_dir)` writes photos plus lots.csv (truth), claims.csv
(declarations with a `fraud_kind` truth column), latent_traits.csv and world.json.
See docs/simulation.md for every parameter.
"""

from __future__ import annotations

from grainproof.simulate.world import (
    DEFAULT_REGIONS,
    DEFAULT_SEASONS,
    DEFAULT_UNREFERENCED,
    NATURE_SEED,
    WorldConfig,
    WorldSummary,
    simulate_world,
)

__all__ = [
    "DEFAULT_REGIONS",
    "DEFAULT_SEASONS",
    "DEFAULT_UNREFERENCED",
    "NATURE_SEED",
    "WorldConfig",
    "WorldSummary",
    "simulate_world",
]
