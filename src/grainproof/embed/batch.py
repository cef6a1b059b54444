"""Embedding a whole lot manifest: the CSV comes back with f_* columns, plus a sidecar of unit vectors.

`units_path` and `read_units` (grainproof.manifest) name and read the sidecar.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from grainproof.domain import LotRecord
from grainproof.embed.embedder import Embedder, get_embedder
from grainproof.embed.vectors import LotEmbedding, lot_embedding
from grainproof.manifest import read_manifest, read_units, units_path, write_manifest
from grainproof.progress import ProgressCallback


def embed_lots(
    lots: list[LotRecord], base_dir: Path, *, embedder: Embedder, progress: ProgressCallback | None = None
) -> dict[str, LotEmbedding]:
    """Lot embeddings for every lot that has photos (paths relative to base_dir), keyed by lot_id."""
    with_photos = [lot for lot in lots if lot.photos]
    paths = [base_dir / photo for lot in with_photos for photo in lot.photos]
    photos = embedder.embed_files(paths, progress=progress)
    result: dict[str, LotEmbedding] = {}
    start = 0
    for lot in with_photos:
        result[lot.lot_id] = lot_embedding(photos[start : start + len(lot.photos)])
        start += len(lot.photos)
    return result


def embed_manifest(
    manifest: Path, out: Path, *, embedder: Embedder | None = None, progress: ProgressCallback | None = None
) -> Path:
    """Write `out`: the manifest with lot vectors as f_* columns and `backbone`/`embedding_warnings` columns.

    Unit vectors (about one kernel each, for admixture) go to `<out stem>.units.npz`: one float16 array
    (m, d) per lot_id. Lots without photos keep the features they came with.
    """
    embedder = embedder or get_embedder()
    lots = read_manifest(manifest)
    embeddings = embed_lots(lots, manifest.parent, embedder=embedder, progress=progress)
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
    return out


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


__all__ = ["embed_lots", "embed_manifest", "read_units", "units_path"]
