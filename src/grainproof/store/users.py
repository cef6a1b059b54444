"""Named desk accounts: argon2 password hashes, disabling, and the failed-login throttle.

People log in to the auditor's desk with a username and a password; API keys stay for machines.
A password is hashed with argon2id (argon2-cffi's defaults, RFC 9106's low-memory profile) and is
never stored or logged. Failed logins are recorded in the database, so every service process
counts them alike: too many for one username, or from one client address, within
`LOGIN_WINDOW` and the login is refused (429) until the window has passed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from grainproof.errors import GrainproofError, NotFoundError
from grainproof.store.database import read_scope, session_scope
from grainproof.store.tables import USER_ROLES, LoginFailure, UserAccount, utc_now

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")

#: Failed logins are counted over this window, then forgotten.
LOGIN_WINDOW = timedelta(minutes=15)
#: Failed logins for one username within the window before it is refused (guessing one person's password).
MAX_FAILURES_PER_USERNAME = 5
#: Failed logins from one client address within the window before it is refused (trying many usernames).
MAX_FAILURES_PER_ADDRESS = 20


class AccountError(GrainproofError):
    """A username or password that cannot be used, or an account that already exists."""

    status_code = 422


class TooManyLoginsError(GrainproofError):
    """Too many failed logins recently for this username or from this address."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AccountDisabledError(GrainproofError):
    """The password was right but an admin disabled the account."""

    status_code = 403


#: Each argon2 check takes 64 MiB and tens of milliseconds: a burst of logins queues here instead of
#: taking the service's memory.
_CHECKS_AT_ONCE = threading.BoundedSemaphore(4)


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@contextmanager
def _argon2_slot() -> Iterator[PasswordHasher]:
    with _CHECKS_AT_ONCE:
        yield _hasher()


def _hash(password: str) -> str:
    with _argon2_slot() as hasher:
        return hasher.hash(password)


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    # Checked against when the username is unknown, so a login takes as long whether the account exists or not.
    return _hash("grainproof decoy password")


def check_username(username: str) -> str:
    """The username, or AccountError saying what a username may hold."""
    if not _USERNAME.match(username):
        raise AccountError(
            f"Username {username!r} cannot be used: 2 to 64 characters, lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit."
        )
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"The password is too short: use at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"The password is too long: use at most {MAX_PASSWORD_CHARS} characters.")
    return password


def create_user(session: Session, *, username: str, password: str, role: str = "auditor") -> UserAccount:
    """A new desk account; the password exists only as its argon2 hash from here on."""
    check_username(username)
    check_password(password)
    if role not in USER_ROLES:
        raise AccountError(f"Unknown role {role!r} for a person: choose one of {', '.join(USER_ROLES)}.")
    if find_user(session, username) is not None:
        raise AccountError(f"There is already an account {username!r}; usernames are never reused.")
    user = UserAccount(username=username, password_hash=_hash(password), role=role)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> UserAccount | None:
    return session.exec(select(UserAccount).where(UserAccount.username == username)).first()


def _get_user(session: Session, username: str) -> UserAccount:
    user = find_user(session, username)
    if user is None:
        raise NotFoundError(f"No account {username!r}; `grainproof users list` shows them.")
    return user


def set_password(session: Session, username: str, password: str) -> UserAccount:
    """Replace an account's password; its open desk sessions end (they are bound to the old hash)."""
    user = _get_user(session, username)
    user.password_hash = _hash(check_password(password))
    session.add(user)
    return user


def disable_user(session: Session, username: str) -> UserAccount:
    """Disable an account (kept: reviews name it); it cannot log in and its sessions end at once."""
    user = _get_user(session, username)
    if user.disabled_at is None:
        user.disabled_at = utc_now()
        session.add(user)
    return user


def enable_user(session: Session, username: str) -> UserAccount:
    user = _get_user(session, username)
    user.disabled_at = None
    session.add(user)
    return user


def list_users(session: Session) -> list[UserAccount]:
    return list(session.exec(select(UserAccount).order_by(col(UserAccount.username))))


def password_matches(user: UserAccount | None, password: str) -> bool:
    """Whether `password` is the account's (always spends one argon2 check, known account or not)."""
    stored = user.password_hash if user is not None else _decoy_hash()
    try:
        with _argon2_slot() as hasher:
            return hasher.verify(stored, password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginAttempt:
    """Who tries to log in, from where (the client address as the server sees it)."""

    username: str
    address: str

    def __post_init__(self) -> None:
        # Stored as given but bounded: an attacker controls both.
        object.__setattr__(self, "username", self.username[:64])
        object.__setattr__(self, "address", self.address[:64])


def check_login_allowed(session: Session, attempt: LoginAttempt, *, now: datetime | None = None) -> None:
    """TooManyLoginsError when this username or this address failed too often within `LOGIN_WINDOW`."""
    since = (now or utc_now()) - LOGIN_WINDOW
    limits = (
        (LoginFailure.username, attempt.username, MAX_FAILURES_PER_USERNAME, "for this username"),
        (LoginFailure.address, attempt.address, MAX_FAILURES_PER_ADDRESS, "from your address"),
    )
    for column, value, limit, whose in limits:
        count, oldest = session.exec(
            select(func.count(), func.min(LoginFailure.created_at)).where(
                col(column) == value, col(LoginFailure.created_at) >= since
            )
        ).one()
        if count >= limit and oldest is not None:
            wait = max(1, int((oldest + LOGIN_WINDOW - (now or utc_now())).total_seconds()) + 1)
            minutes = -(-wait // 60)
            raise TooManyLoginsError(
                f"Too many failed logins {whose} ({count} in {int(LOGIN_WINDOW.total_seconds() // 60)} minutes); "
                f"try again in {minutes} minute{'s' if minutes != 1 else ''}, or ask an admin to reset the "
                "password (`grainproof users password NAME`).",
                retry_after_s=wait,
            )


def record_login_failure(session: Session, attempt: LoginAttempt) -> None:
    """Count a failed login (and forget failures older than the window: the table stays small)."""
    session.exec(delete(LoginFailure).where(col(LoginFailure.created_at) < utc_now() - LOGIN_WINDOW))  # type: ignore[call-overload]
    session.add(LoginFailure(username=attempt.username, address=attempt.address))
    session.flush()


def clear_login_failures(session: Session, username: str) -> None:
    """After a successful login the username starts afresh (its owner knows the password)."""
    session.exec(delete(LoginFailure).where(col(LoginFailure.username) == username))  # type: ignore[call-overload]


def log_in(engine: Engine, attempt: LoginAttempt, password: str) -> UserAccount | None:
    """The live account when the password is right; None (and the failure counted) when it is not.

    TooManyLoginsError before any password check once the throttle applies; AccountDisabledError for a
    disabled account. The slow argon2 check runs outside any write transaction, so it never holds the
    database's write lock.
    """
    with read_scope(engine) as session:
        check_login_allowed(session, attempt)
        user = find_user(session, attempt.username)
    if not password_matches(user, password) or user is None:
        with session_scope(engine) as session:
            record_login_failure(session, attempt)
        return None
    if user.disabled_at is not None:
        raise AccountDisabledError(f"The account {user.username!r} is disabled; ask an admin to enable it.")
    with session_scope(engine) as session:
        clear_login_failures(session, user.username)
    return user
