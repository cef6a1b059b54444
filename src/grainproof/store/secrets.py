"""Server secrets kept in the data dir when no environment variable sets them (created once, owner-only)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from grainproof.settings import Settings

_BLIND_AUDIT_SECRET_FILE = "blind-audit-secret"


def stored_secret(path: Path) -> bytes:
    """The secret in `path`, written there first (random, readable by its owner only) when it is missing."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def write_private(path: Path, text: str) -> None:
    """Create `path` with `text`, mode 0600; if another process created it first, keep theirs."""
    # O_EXCL: two processes starting at once keep whichever secret was written first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def blind_audit_secret(settings: Settings) -> bytes:
    """The key of the blind-audit draw: GRAINPROOF_BLIND_AUDIT_SECRET, else a random one kept in the data dir.

    Several service processes on one database must share it (set the variable, or share the data dir).
    """
    if settings.blind_audit_secret:
        return settings.blind_audit_secret.encode("utf-8")
    return stored_secret(settings.data_dir / _BLIND_AUDIT_SECRET_FILE)
