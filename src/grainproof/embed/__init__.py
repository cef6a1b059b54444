"""Photos to embeddings: backbone registry, tray preprocessing, cached batch embedding, device invariance.

Importing this package does not import torch (the API and `grainproof --help` stay fast); `get_embedder`
loads it on first use. `grainproof.embed.invariance` is numpy/sklearn only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from grainproof.embed.vectors import LotEmbedding, PhotoEmbedding, lot_embedding

if TYPE_CHECKING:
    from grainproof.embed.batch import EmbeddedManifest
    from grainproof.embed.embedder import Embedder
    from grainproof.progress import ProgressCallback
    from grainproof.settings import Settings

__all__ = ["Embedder", "LotEmbedding", "PhotoEmbedding", "embed_manifest", "get_embedder", "lot_embedding"]


def get_embedder(
    name: str | None = None,
    *,
    checkpoint_path: Path | None = None,
    settings: Settings | None = None,
    runtime: str | None = None,
) -> Embedder:
    """The embedder for a backbone name (default: settings.backbone); loads torch and the weights on first use."""
    from grainproof.embed.embedder import get_embedder as load

    return load(name, checkpoint_path=checkpoint_path, settings=settings, runtime=runtime)


def embed_manifest(
    manifest: Path, out: Path, *, embedder: Embedder | None = None, progress: ProgressCallback | None = None
) -> EmbeddedManifest:
    """Write `out`: the manifest with the lot vectors as f_* columns and a `backbone` column, plus a units sidecar;
    says what it wrote and the photos' warnings by kind."""
    from grainproof.embed.batch import embed_manifest as run

    return run(manifest, out, embedder=embedder, progress=progress)


def __getattr__(name: str) -> object:
    if name == "Embedder":
        from grainproof.embed.embedder import Embedder

        return Embedder
    raise AttributeError(name)
