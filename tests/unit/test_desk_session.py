"""Desk session cookies: only the service can mint them, they expire, and they die with the password."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.api.desk.session import (
    DeskSession,
    csrf_ok,
    csrf_token,
    decode_session,
    encode_session,
    new_session,
    peek_user_id,
    session_secret,
)
from grainproof.settings import Settings

SECRET = b"0123456789abcdef0123456789abcdef"
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"
NOW = 1_800_000_000.0


def test_cookie_round_trips_to_the_same_session() -> None:
    session = new_session(7, now=NOW)
    cookie = encode_session(session, secret=SECRET, bound_to=PASSWORD_HASH)
    assert peek_user_id(cookie) == 7
    assert decode_session(cookie, secret=SECRET, bound_to=PASSWORD_HASH, now=NOW + 60) == session


def test_cookie_expires() -> None:
    cookie = encode_session(DeskSession(user_id=7, expires_at=int(NOW) + 10), secret=SECRET, bound_to=PASSWORD_HASH)
    assert decode_session(cookie, secret=SECRET, bound_to=PASSWORD_HASH, now=NOW + 11) is None


def test_cookie_signed_with_another_secret_is_rejected() -> None:
    cookie = encode_session(new_session(7, now=NOW), secret=b"another secret", bound_to=PASSWORD_HASH)
    assert decode_session(cookie, secret=SECRET, bound_to=PASSWORD_HASH, now=NOW) is None


def test_cookie_dies_when_the_password_changes() -> None:
    cookie = encode_session(new_session(7, now=NOW), secret=SECRET, bound_to=PASSWORD_HASH)
    assert (
        decode_session(cookie, secret=SECRET, bound_to="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$b3RoZXI", now=NOW) is None
    )


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=200), st.characters())
def test_any_edit_of_a_cookie_is_rejected(user_id: int, position: int, replacement: str) -> None:
    cookie = encode_session(new_session(user_id, now=NOW), secret=SECRET, bound_to=PASSWORD_HASH)
    index = position % len(cookie)
    tampered = cookie[:index] + replacement + cookie[index + 1 :]
    if tampered == cookie:
        return
    assert decode_session(tampered, secret=SECRET, bound_to=PASSWORD_HASH, now=NOW) is None


@given(st.text(max_size=300))
def test_garbage_cookies_never_raise(cookie: str) -> None:
    assert decode_session(cookie, secret=SECRET, bound_to=PASSWORD_HASH, now=NOW) is None
    peek_user_id(cookie)


def test_csrf_token_belongs_to_its_session() -> None:
    first = encode_session(new_session(1, now=NOW), secret=SECRET, bound_to=PASSWORD_HASH)
    second = encode_session(new_session(2, now=NOW), secret=SECRET, bound_to=PASSWORD_HASH)
    token = csrf_token(first, secret=SECRET)
    assert csrf_ok(token, first, secret=SECRET)
    assert not csrf_ok(token, second, secret=SECRET)
    assert not csrf_ok(None, first, secret=SECRET)
    assert not csrf_ok("", first, secret=SECRET)


def test_session_secret_is_created_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    secret = session_secret(settings)
    assert len(secret) >= 32 and session_secret(settings) == secret
    assert (tmp_path / "desk-session-secret").stat().st_mode & 0o077 == 0


def test_configured_session_secret_wins_over_the_file(tmp_path: Path) -> None:
    assert session_secret(Settings(data_dir=tmp_path, session_secret="shared")) == b"shared"
    assert not (tmp_path / "desk-session-secret").exists()


def test_session_needs_a_real_account_id() -> None:
    with pytest.raises(ValueError):
        DeskSession(user_id=0, expires_at=1)
