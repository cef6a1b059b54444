"""Embedding a whole lot manifest: the CSV comes back with f_* columns, plus a sidecar of unit vectors."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from grainproof.domain import LotRecord
from grainproof.embed.embedder import Embedder, get_embedder
from grainproof.embed.vectors import LotEmbedding, PhotoEmbedding, lot_embedding
from grainproof.manifest import read_manifest, read_units, units_path, write_manifest
from grainproof.progress import ProgressCallback


@dataclass(frozen=True, slots=True, kw_only=True)
class WarningCount:
    """How many photos got one kind of warning, and one of them (so a user can look)."""

    warning: str
    photos: int
    example: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedManifest:
    """What `embed_manifest` wrote: the manifest with lot vectors, its unit vectors, and the photos' warnings."""

    path: Path
    units: Path
    lots: int
    photos: int
    warnings: tuple[WarningCount, ...]


def embed_lot_photos(
    lots: list[LotRecord], base_dir: Path, *, embedder: Embedder, progress: ProgressCallback | None = None
) -> dict[str, list[PhotoEmbedding]]:
    """Each photo's embedding, by lot_id, for every lot that has photos (paths relative to base_dir)."""
    with_photos = [lot for lot in lots if lot.photos]
    paths = [base_dir / photo for lot in with_photos for photo in lot.photos]
    photos = embedder.embed_files(paths, progress=progress)
    result: dict[str, list[PhotoEmbedding]] = {}
    start = 0
    for lot in with_photos:
        result[lot.lot_id] = photos[start : start + len(lot.photos)]
        start += len(lot.photos)
    return result


def embed_lots(
    lots: list[LotRecord], base_dir: Path, *, embedder: Embedder, progress: ProgressCallback | None = None
) -> dict[str, LotEmbedding]:
    """Lot embeddings for every lot that has photos (paths relative to base_dir), keyed by lot_id."""
    photos = embed_lot_photos(lots, base_dir, embedder=embedder, progress=progress)
    return {lot_id: lot_embedding(embeddings) for lot_id, embeddings in photos.items()}


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def warning_kind(warning: str) -> str:
    """A photo warning without the photo's name and with its figures left out: what photos have in common."""
    name, separator, message = warning.partition(": ")
    if separator and " " not in name:  # "<photo>: <message>"; messages themselves start with words
        warning = message
    return _NUMBER.sub("…", warning)


def count_warnings(photos: Iterable[tuple[str, PhotoEmbedding]]) -> tuple[WarningCount, ...]:
    """Warnings by kind over (photo name, embedding) pairs, most frequent first: one line per kind, not per photo."""
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for name, embedding in photos:
        for kind in dict.fromkeys(warning_kind(w) for w in embedding.warnings):
            counts[kind] = counts.get(kind, 0) + 1
            examples.setdefault(kind, name)
    return tuple(
        WarningCount(warning=kind, photos=n, example=examples[kind])
        for kind, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    )


def embed_manifest(
    manifest: Path, out: Path, *, embedder: Embedder | None = None, progress: ProgressCallback | None = None
) -> EmbeddedManifest:
    """Write `out`: the manifest with lot vectors as f_* columns and `backbone`/`embedding_warnings` columns.

    Unit vectors (about one kernel each, for admixture) go to `<out stem>.units.npz`: one float16 array
    (m, d) per lot_id. Lots without photos keep the features they came with.
    """
    embedder = embedder or get_embedder()
    lots = read_manifest(manifest)
    photos_by_lot = embed_lot_photos(lots, manifest.parent, embedder=embedder, progress=progress)
    embeddings = {lot_id: lot_embedding(embedded) for lot_id, embedded in photos_by_lot.items()}
    rows: list[LotRecord] = []
    for lot in lots:
        embedded = embeddings.get(lot.lot_id)
        if embedded is None:
            rows.append(lot)
            continue
        extra = {
            **lot.extra,
            "backbone": embedder.backbone_id,
            "embedding_warnings": " | ".join(embedded.warnings),
        }
        # The photo paths stay relative to the input manifest: rewrite them if the output lives elsewhere.
        photos = tuple(_relative(manifest.parent / p, out.parent) for p in lot.photos)
        vector = tuple(float(v) for v in embedded.vector)
        rows.append(replace(lot, features=vector, extra=extra, photos=photos))
    write_manifest(out, rows)
    _write_units(units_path(out), {lot_id: e.unit_vectors for lot_id, e in embeddings.items()})
    named = [
        (name, photo) for lot in lots for name, photo in zip(lot.photos, photos_by_lot.get(lot.lot_id, ()), strict=True)
    ]
    return EmbeddedManifest(
        path=out,
        units=units_path(out),
        lots=len(embeddings),
        photos=len(named),
        warnings=count_warnings(named),
    )


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _write_units(path: Path, units: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **{lot_id: u.astype(np.float16) for lot_id, u in units.items()})  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = [
    "EmbeddedManifest",
    "WarningCount",
    "embed_lot_photos",
    "embed_lots",
    "embed_manifest",
    "read_units",
    "units_path",
]
