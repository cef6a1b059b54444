"""Photos on disk by content hash: one file per distinct photo, written atomically, never overwritten."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def content_hash(data: bytes) -> str:
    """The sha256 hex digest that names a photo."""
    return hashlib.sha256(data).hexdigest()


class PhotoStore:
    """Stores photo bytes under `root/ab/abcdef...` (two-level fan-out keeps directories small)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{digest!r} is not a sha256 hex digest")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store the bytes (a no-op when already stored) and return their content hash.

        The file appears under its final name only when complete (write to a temporary file,
        then rename), so a crash never leaves a truncated photo behind a valid hash.
        """
        digest = content_hash(data)
        target = self.path_for(digest)
        if target.is_file():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes | None:
        """The photo's bytes, or None when it is not stored."""
        path = self.path_for(digest)
        return path.read_bytes() if path.is_file() else None
