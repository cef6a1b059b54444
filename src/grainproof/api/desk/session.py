"""Browser sessions for the auditor's desk: a signed, HttpOnly cookie naming the account that logged in.

The cookie holds no secret: only the account's id, an expiry and an HMAC over both, bound to the
account's password hash, so a stolen cookie dies with its expiry, and a new password ends every
session at once (disabling the account does too: the desk checks it on every request).
The signing secret is GRAINPROOF_SESSION_SECRET when set (several service processes must share it),
else a random one kept in the data dir.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from grainproof.settings import Settings
from grainproof.store.secrets import stored_secret

COOKIE_NAME = "grainproof_desk"
#: A working day: an auditor logs in once in the morning.
SESSION_SECONDS = 8 * 3600
_SECRET_FILE = "desk-session-secret"


def session_secret(settings: Settings) -> bytes:
    """The key that signs session cookies (created on first use, readable by its owner only)."""
    if settings.session_secret:
        return settings.session_secret.encode("utf-8")
    return stored_secret(settings.data_dir / _SECRET_FILE)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskSession:
    """Who is logged in (a desk account's id) and until when (unix seconds)."""

    user_id: int
    expires_at: int

    def __post_init__(self) -> None:
        if self.user_id < 1:
            raise ValueError("user_id must be positive")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, body: str, bound_to: str) -> str:
    return _b64(hmac.new(secret, f"{body}|{bound_to}".encode("utf-8", "replace"), hashlib.sha256).digest())


def encode_session(session: DeskSession, *, secret: bytes, bound_to: str) -> str:
    """The cookie value for a session of the account whose password hash is `bound_to`."""
    body = _b64(json.dumps({"u": session.user_id, "e": session.expires_at}, separators=(",", ":")).encode())
    return f"{body}.{_signature(secret, body, bound_to)}"


def peek_user_id(cookie: str) -> int | None:
    """The account id a cookie claims, before its signature is checked (to look up what it is bound to)."""
    try:
        body = cookie.split(".", 1)[0]
        user_id = json.loads(_unb64(body))["u"]
    except (ValueError, KeyError, TypeError):
        return None
    return user_id if isinstance(user_id, int) and user_id > 0 else None


def decode_session(cookie: str, *, secret: bytes, bound_to: str, now: float | None = None) -> DeskSession | None:
    """The session a cookie carries, or None when it is forged, altered, for another password or expired."""
    body, _, signature = cookie.partition(".")
    # Bytes, not str: compare_digest refuses non-ASCII text, and a cookie may hold anything.
    expected = _signature(secret, body, bound_to).encode("ascii")
    if not signature or not hmac.compare_digest(signature.encode("utf-8", "replace"), expected):
        return None
    try:
        data = json.loads(_unb64(body))
        session = DeskSession(user_id=int(data["u"]), expires_at=int(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires_at <= (time.time() if now is None else now):
        return None
    return session


def new_session(user_id: int, *, now: float | None = None) -> DeskSession:
    return DeskSession(user_id=user_id, expires_at=int(time.time() if now is None else now) + SESSION_SECONDS)


def csrf_token(cookie: str, *, secret: bytes) -> str:
    """The token every desk form carries: tied to the session, so another site cannot forge a post."""
    return _b64(hmac.new(secret, f"csrf|{cookie}".encode("utf-8", "replace"), hashlib.sha256).digest())[:32]


def csrf_ok(token: str | None, cookie: str, *, secret: bytes) -> bool:
    expected = csrf_token(cookie, secret=secret).encode("ascii")
    return bool(token) and hmac.compare_digest(str(token).encode("utf-8", "replace"), expected)
