"""`--engine local|ray`: what the CLI hands the services for each engine (None: the single-process default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grainproof.errors import GrainproofError
from grainproof.settings import Settings

ENGINES = ("local", "ray")


def _check(engine: str, ray_address: str | None) -> bool:
    """True for the Ray engine; a sentence for an unknown engine or an address without Ray."""
    if engine not in ENGINES:
        raise GrainproofError(f"--engine {engine!r} is not known; use local or ray.")
    if ray_address and engine != "ray":
        raise GrainproofError("--ray-address is only used with --engine ray; add --engine ray or drop the address.")
    return engine == "ray"


def chunk_runner(engine: str, ray_address: str | None = None) -> Any:
    """The ChunkRunner for a reference build: None (in process) or a RayRunner."""
    if not _check(engine, ray_address):
        return None
    from grainproof.scale.ray_engine import RayRunner

    return RayRunner(address=ray_address)


def photo_embedder(
    engine: str,
    ray_address: str | None = None,
    *,
    name: str | None = None,
    checkpoint_path: Path | None = None,
    settings: Settings | None = None,
) -> Any:
    """The photo embedder for an engine: None (the caller's in-process default) or a RayEmbedder."""
    if not _check(engine, ray_address):
        return None
    from grainproof.scale.ray_engine import RayEmbedder

    return RayEmbedder(name=name, checkpoint_path=checkpoint_path, settings=settings, address=ray_address)
