"""Storage: sqlmodel tables, migrations, API keys, photos by content hash and the hash-chained audit log."""

from __future__ import annotations

from grainproof.store.database import (
    DatabaseError,
    create_db_engine,
    current_revision,
    downgrade,
    head_revision,
    require_current_schema,
    session_scope,
    upgrade,
)
from grainproof.store.photos import PhotoStore, content_hash

__all__ = [
    "DatabaseError",
    "PhotoStore",
    "content_hash",
    "create_db_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "require_current_schema",
    "session_scope",
    "upgrade",
]
