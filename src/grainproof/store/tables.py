"""The database tables (sqlmodel): what the service remembers, one class per table.

Verifications, reviews and audit entries are append-only: rows are inserted, never updated,
so the audit chain can vouch for them. Vectors are stored as float32 bytes, photos only by
content hash (the files live under `Settings.photos_dir`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

#: Roles an API key can carry, from least to most privileged.
ROLES: tuple[str, ...] = ("intake", "auditor", "admin")

#: Roles a named person's account can carry: the people who work the auditor's desk.
USER_ROLES: tuple[str, ...] = ("auditor", "admin")

#: Decisions an auditor can record on a verification.
REVIEW_DECISIONS: tuple[str, ...] = ("confirmed_fraud", "false_alarm", "confirmed_genuine", "inconclusive")

#: Life cycle of a reference model version built in the background.
MODEL_STATUSES: tuple[str, ...] = ("queued", "building", "ready", "failed")


def utc_now() -> datetime:
    """The current time in UTC, to the millisecond (every database stores that much the same way)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


class ApiKey(SQLModel, table=True):
    """An API key: only the sha256 of the secret is stored; `prefix` lets people tell keys apart."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    prefix: str = Field(max_length=16)
    role: str = Field(max_length=16)
    name: str = Field(default="", max_length=200)
    site: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utc_now)
    revoked_at: datetime | None = None


class UserAccount(SQLModel, table=True):
    """A named person who logs in to the auditor's desk: an argon2 hash of the password, never the password.

    Accounts are disabled, never deleted: reviews name their author by username for good.
    """

    __tablename__ = "user_account"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    role: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utc_now)
    disabled_at: datetime | None = None


class LoginFailure(SQLModel, table=True):
    """A failed desk login: the throttle counts recent ones per username and per client address.

    Kept in the database, not in memory, so every service process sees the same count.
    """

    __tablename__ = "login_failure"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, index=True)
    address: str = Field(max_length=64, index=True)
    created_at: datetime = Field(default_factory=utc_now, index=True)


class ReferenceLot(SQLModel, table=True):
    """A lot of known origin that reference models are built from."""

    __tablename__ = "reference_lot"

    id: int | None = Field(default=None, primary_key=True)
    lot_id: str = Field(max_length=200, unique=True, index=True)
    species: str = Field(max_length=100, index=True)
    variety: str = Field(max_length=100, index=True)
    lon: float | None = None
    lat: float | None = None
    region: str | None = Field(default=None, max_length=50)
    origin_geojson: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    harvest_date: str | None = Field(default=None, max_length=10)
    device: str | None = Field(default=None, max_length=200)
    dim: int
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    unit_vectors: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    extra_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    photo_hashes_json: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    source: str = Field(default="api", max_length=20)
    verification_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utc_now)


class ReferenceModelVersion(SQLModel, table=True):
    """A reference model build: its status, where its artefact lives, and whether it is the active one."""

    __tablename__ = "reference_model"

    id: str = Field(primary_key=True, max_length=36)
    status: str = Field(default="queued", max_length=16)
    version: str | None = Field(default=None, max_length=200)
    path: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    is_active: bool = Field(default=False, index=True)
    seed: int = 0
    region_set: str | None = Field(default=None, max_length=100)
    lot_count: int | None = None
    backbone_id: str | None = Field(default=None, max_length=200)
    requested_by: int | None = Field(default=None, foreign_key="api_key.id")
    created_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime | None = None
    activated_at: datetime | None = None


class Verification(SQLModel, table=True):
    """One verified claim: the declaration, the photos' hashes, the verdict and who asked (never updated)."""

    __tablename__ = "verification"

    id: str = Field(primary_key=True, max_length=36)
    lot_id: str = Field(max_length=200, index=True)
    species: str = Field(max_length=100)
    variety: str = Field(max_length=100)
    site: str | None = Field(default=None, max_length=200, index=True)
    claim_json: str = Field(sa_column=Column(Text, nullable=False))
    photo_hashes_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    verdict_json: str = Field(sa_column=Column(Text, nullable=False))
    plausibility: float
    flagged: bool = Field(index=True)
    model_version: str = Field(max_length=200)
    reference_model_id: str | None = Field(default=None, foreign_key="reference_model.id")
    backbone_id: str | None = Field(default=None, max_length=200)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    unit_vectors: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    requested_by: int | None = Field(default=None, foreign_key="api_key.id", index=True)
    created_at: datetime = Field(default_factory=utc_now, index=True)


class Review(SQLModel, table=True):
    """An auditor's decision on a verification (appended; a later review supersedes an earlier one)."""

    __tablename__ = "review"

    id: str = Field(primary_key=True, max_length=36)
    verification_id: str = Field(foreign_key="verification.id", index=True, max_length=36)
    decision: str = Field(max_length=32)
    note: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    promoted_reference_lot: str | None = Field(default=None, max_length=200)
    reviewer: int | None = Field(default=None, foreign_key="api_key.id")
    #: The named auditor who decided on the desk (None: an API key decided, see `reviewer`).
    reviewer_user: str | None = Field(default=None, foreign_key="user_account.username", max_length=64)
    #: The earlier review this one contradicts (four-eyes: it needed a note and a second auditor).
    overrides: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utc_now)


class AuditEntry(SQLModel, table=True):
    """One link of the hash-chained audit log: `entry_hash` covers the content and `prev_hash`."""

    __tablename__ = "audit_entry"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(max_length=32)
    record_id: str = Field(max_length=64, index=True)
    payload_json: str = Field(sa_column=Column(Text, nullable=False))
    created_at: str = Field(max_length=40)
    prev_hash: str = Field(max_length=64, unique=True)
    entry_hash: str = Field(max_length=64, unique=True)


class IdempotencyRecord(SQLModel, table=True):
    """An Idempotency-Key seen from one API key: the request's fingerprint and the response it got."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("api_key_id", "key", name="uq_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    api_key_id: int = Field(foreign_key="api_key.id")
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    verification_id: str = Field(foreign_key="verification.id", max_length=36)
    created_at: datetime = Field(default_factory=utc_now)


class BlindSample(SQLModel, table=True):
    """An unflagged verification drawn for a blind audit (keyed hash of its id), and the rate it was drawn at.

    Written in the verification's own transaction; the queue shows it beside the flagged lots, marked.
    """

    __tablename__ = "blind_sample"

    verification_id: str = Field(primary_key=True, foreign_key="verification.id", max_length=36)
    audit_rate: float
    created_at: datetime = Field(default_factory=utc_now)


class AlertAcknowledgement(SQLModel, table=True):
    """An auditor's acknowledgement of a monitor alert: that group's test restarts from lots stored after it."""

    __tablename__ = "alert_acknowledgement"

    id: str = Field(primary_key=True, max_length=36)
    alert_key: str = Field(max_length=400, index=True)
    note: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    acknowledged_by: int | None = Field(default=None, foreign_key="api_key.id")
    acknowledged_by_user: str | None = Field(default=None, foreign_key="user_account.username", max_length=64)
    created_at: datetime = Field(default_factory=utc_now, index=True)
