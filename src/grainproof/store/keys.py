"""API keys: a random secret shown once, only its sha256 kept; roles intake < auditor < admin."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Connection
from sqlmodel import Session, select

from grainproof.errors import GrainproofError, NotFoundError
from grainproof.store.tables import ROLES, ApiKey, utc_now

_PREFIX = "gp_"


def hash_key(secret: str) -> str:
    """sha256 of the secret: enough for a 256-bit random token (no salt needed, nothing to guess)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(session: Session, *, role: str, name: str = "", site: str | None = None) -> tuple[ApiKey, str]:
    """A new key row and its secret; the secret exists only in the return value."""
    if role not in ROLES:
        raise GrainproofError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")
    secret = _PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(key_hash=hash_key(secret), prefix=secret[:10], role=role, name=name, site=site)
    session.add(key)
    session.flush()
    return key, secret


def find_key(db: Session | Connection, secret: str) -> ApiKey | None:
    """The live key with this secret, or None (unknown or revoked); a detached copy of its row.

    Every request asks, so it also runs on a bare Core connection (`read_connection`).
    """
    table = ApiKey.__table__  # type: ignore[attr-defined]
    row = db.execute(select(table).where(table.c.key_hash == hash_key(secret))).first()
    if row is None or row.revoked_at is not None:
        return None
    return ApiKey(**row._mapping)


def revoke_key(session: Session, key_id: int) -> ApiKey:
    """Mark a key revoked (kept for the record: verifications name who asked)."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"No API key with id {key_id}; `grainproof keys list` shows them.")
    if key.revoked_at is None:
        key.revoked_at = utc_now()
        session.add(key)
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(ApiKey.id)))  # type: ignore[arg-type]
