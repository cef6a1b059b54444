"""Browser sessions for the auditor's desk: a signed, HttpOnly cookie naming the API key that logged in.

The cookie holds no secret of the key: only its id, an expiry and an HMAC over both (bound to the
key's hash), so a stolen cookie dies with its expiry and a revoked key ends every session at once.
The signing secret is GRAINPROOF_SESSION_SECRET when set (several service processes must share it),
else a random one kept in the data dir.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from grainproof.settings import Settings

COOKIE_NAME = "grainproof_desk"
#: A working day: an auditor logs in once in the morning.
SESSION_SECONDS = 8 * 3600
_SECRET_FILE = "desk-session-secret"


def session_secret(settings: Settings) -> bytes:
    """The key that signs session cookies (created on first use, readable by its owner only)."""
    if settings.session_secret:
        return settings.session_secret.encode("utf-8")
    path = settings.data_dir / _SECRET_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def _write_private(path: Path, text: str) -> None:
    # O_EXCL: two processes starting at once keep whichever secret was written first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskSession:
    """Who is logged in (an API key id) and until when (unix seconds)."""

    key_id: int
    expires_at: int

    def __post_init__(self) -> None:
        if self.key_id < 1:
            raise ValueError("key_id must be positive")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, body: str, key_hash: str) -> str:
    return _b64(hmac.new(secret, f"{body}|{key_hash}".encode("utf-8", "replace"), hashlib.sha256).digest())


def encode_session(session: DeskSession, *, secret: bytes, key_hash: str) -> str:
    """The cookie value for a session of the key whose stored hash is `key_hash`."""
    body = _b64(json.dumps({"k": session.key_id, "e": session.expires_at}, separators=(",", ":")).encode())
    return f"{body}.{_signature(secret, body, key_hash)}"


def peek_key_id(cookie: str) -> int | None:
    """The key id a cookie claims, before its signature is checked (to look up the key's hash)."""
    try:
        body = cookie.split(".", 1)[0]
        key_id = json.loads(_unb64(body))["k"]
    except (ValueError, KeyError, TypeError):
        return None
    return key_id if isinstance(key_id, int) and key_id > 0 else None


def decode_session(cookie: str, *, secret: bytes, key_hash: str, now: float | None = None) -> DeskSession | None:
    """The session a cookie carries, or None when it is forged, altered, for another key or expired."""
    body, _, signature = cookie.partition(".")
    # Bytes, not str: compare_digest refuses non-ASCII text, and a cookie may hold anything.
    expected = _signature(secret, body, key_hash).encode("ascii")
    if not signature or not hmac.compare_digest(signature.encode("utf-8", "replace"), expected):
        return None
    try:
        data = json.loads(_unb64(body))
        session = DeskSession(key_id=int(data["k"]), expires_at=int(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires_at <= (time.time() if now is None else now):
        return None
    return session


def new_session(key_id: int, *, now: float | None = None) -> DeskSession:
    return DeskSession(key_id=key_id, expires_at=int(time.time() if now is None else now) + SESSION_SECONDS)


def csrf_token(cookie: str, *, secret: bytes) -> str:
    """The token every desk form carries: tied to the session, so another site cannot forge a post."""
    return _b64(hmac.new(secret, f"csrf|{cookie}".encode("utf-8", "replace"), hashlib.sha256).digest())[:32]


def csrf_ok(token: str | None, cookie: str, *, secret: bytes) -> bool:
    expected = csrf_token(cookie, secret=secret).encode("ascii")
    return bool(token) and hmac.compare_digest(str(token).encode("utf-8", "replace"), expected)
