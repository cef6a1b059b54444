"""The embedding cache: one file per (photo content, backbone, preprocessing), written atomically.

A photo is never embedded twice by the same backbone: the key is the sha256 of the file's bytes, so renamed or
re-uploaded copies hit the cache, and a new backbone or preprocessing version misses it.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from grainproof.embed.vectors import PhotoEmbedding

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


class EmbeddingCache:
    """Photo embeddings on disk under `root/<backbone_id>/<preprocessing version>/<hash[:2]>/<hash>.npz`."""

    def __init__(self, root: Path, *, backbone_id: str, preprocess_version: str) -> None:
        self.root = root
        self.backbone_id = backbone_id
        self.directory = root / _UNSAFE.sub("_", backbone_id) / _UNSAFE.sub("_", preprocess_version)

    def _path(self, content_hash: str) -> Path:
        return self.directory / content_hash[:2] / f"{content_hash}.npz"

    def get(self, content_hash: str) -> PhotoEmbedding | None:
        """The cached embedding, or None (also for an unreadable entry, which is then recomputed)."""
        path = self._path(content_hash)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                return PhotoEmbedding(
                    vector=stored["vector"],
                    unit_vectors=stored["unit_vectors"].astype(np.float32),
                    content_hash=content_hash,
                    warnings=tuple(str(w) for w in stored["warnings"]),
                    backbone_id=self.backbone_id,
                )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None

    def put(self, embedding: PhotoEmbedding) -> None:
        """Store an embedding; a crash mid-write leaves no partial entry (write to a temp file, then rename)."""
        path = self._path(embedding.content_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    vector=embedding.vector,
                    # Half precision halves the disk use; units feed admixture scores, not the lot vector.
                    unit_vectors=embedding.unit_vectors.astype(np.float16),
                    warnings=np.asarray(embedding.warnings, dtype=str),
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
