"""Lot vectors for lots that come with photos only: embed them (EMBED) and put the vectors on the lots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from grainproof.domain import LotRecord
from grainproof.errors import ClaimError
from grainproof.progress import ProgressCallback

if TYPE_CHECKING:
    from grainproof.embed import Embedder


def ensure_features(
    lots: Sequence[LotRecord],
    *,
    base_dir: Path | None,
    embedder: Embedder | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[list[LotRecord], dict[str, np.ndarray], dict[str, tuple[str, ...]], str | None]:
    """Lots with feature vectors (photos embedded where missing), unit vectors and warnings per lot, backbone id.

    Lots that already carry f_* features are used as they are (no units, no backbone id from here).
    """
    todo = [lot for lot in lots if lot.features is None]
    if not todo:
        return list(lots), {}, {}, None
    no_photos = [lot.lot_id for lot in todo if not lot.photos]
    if no_photos:
        raise ClaimError(f"Lot(s) {', '.join(no_photos[:5])} have neither feature values nor photos.")
    from grainproof.embed import get_embedder, lot_embedding

    embedder = embedder or get_embedder()
    root = base_dir or Path.cwd()
    paths = [root / photo for lot in todo for photo in lot.photos]
    photos = embedder.embed_files(paths, progress=progress)
    units: dict[str, np.ndarray] = {}
    warnings: dict[str, tuple[str, ...]] = {}
    done: dict[str, LotRecord] = {}
    position = 0
    for lot in todo:
        embedding = lot_embedding(photos[position : position + len(lot.photos)])
        position += len(lot.photos)
        done[lot.lot_id] = replace(lot, features=tuple(float(x) for x in embedding.vector))
        units[lot.lot_id] = np.asarray(embedding.unit_vectors, dtype=np.float32)
        warnings[lot.lot_id] = embedding.warnings
    return [done.get(lot.lot_id, lot) for lot in lots], units, warnings, embedder.backbone_id
