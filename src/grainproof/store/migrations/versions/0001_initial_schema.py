"""Initial schema: API keys, reference lots and model versions, verifications, reviews, audit log, idempotency.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("prefix", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("site", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_key_key_hash"), ["key_hash"], unique=True)

    op.create_table(
        "audit_entry",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("record_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("entry_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("entry_hash"),
        sa.UniqueConstraint("prev_hash"),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entry_record_id"), ["record_id"], unique=False)

    op.create_table(
        "reference_lot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("species", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("variety", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("region", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=True),
        sa.Column("origin_geojson", sa.Text(), nullable=True),
        sa.Column("harvest_date", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True),
        sa.Column("device", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("unit_vectors", sa.LargeBinary(), nullable=True),
        sa.Column("extra_json", sa.Text(), server_default="{}", nullable=False),
        sa.Column("photo_hashes_json", sa.Text(), server_default="[]", nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("verification_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reference_lot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reference_lot_lot_id"), ["lot_id"], unique=True)
        batch_op.create_index(batch_op.f("ix_reference_lot_species"), ["species"], unique=False)
        batch_op.create_index(batch_op.f("ix_reference_lot_variety"), ["variety"], unique=False)

    op.create_table(
        "reference_model",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("region_set", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("lot_count", sa.Integer(), nullable=True),
        sa.Column("backbone_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("activated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["api_key.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reference_model", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reference_model_is_active"), ["is_active"], unique=False)

    op.create_table(
        "verification",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("lot_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("species", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("variety", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("site", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("claim_json", sa.Text(), nullable=False),
        sa.Column("photo_hashes_json", sa.Text(), nullable=False),
        sa.Column("verdict_json", sa.Text(), nullable=False),
        sa.Column("plausibility", sa.Float(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("model_version", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("reference_model_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("backbone_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("unit_vectors", sa.LargeBinary(), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reference_model_id"],
            ["reference_model.id"],
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["api_key.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("verification", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verification_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_verification_flagged"), ["flagged"], unique=False)
        batch_op.create_index(batch_op.f("ix_verification_lot_id"), ["lot_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_verification_requested_by"), ["requested_by"], unique=False)
        batch_op.create_index(batch_op.f("ix_verification_site"), ["site"], unique=False)

    op.create_table(
        "idempotency_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("verification_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_key.id"],
        ),
        sa.ForeignKeyConstraint(
            ["verification_id"],
            ["verification.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("api_key_id", "key", name="uq_idempotency_key"),
    )
    op.create_table(
        "review",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("verification_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("decision", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("promoted_reference_lot", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("reviewer", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reviewer"],
            ["api_key.id"],
        ),
        sa.ForeignKeyConstraint(
            ["verification_id"],
            ["verification.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_verification_id"), ["verification_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_verification_id"))

    op.drop_table("review")
    op.drop_table("idempotency_record")
    with op.batch_alter_table("verification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verification_site"))
        batch_op.drop_index(batch_op.f("ix_verification_requested_by"))
        batch_op.drop_index(batch_op.f("ix_verification_lot_id"))
        batch_op.drop_index(batch_op.f("ix_verification_flagged"))
        batch_op.drop_index(batch_op.f("ix_verification_created_at"))

    op.drop_table("verification")
    with op.batch_alter_table("reference_model", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reference_model_is_active"))

    op.drop_table("reference_model")
    with op.batch_alter_table("reference_lot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reference_lot_variety"))
        batch_op.drop_index(batch_op.f("ix_reference_lot_species"))
        batch_op.drop_index(batch_op.f("ix_reference_lot_lot_id"))

    op.drop_table("reference_lot")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entry_record_id"))

    op.drop_table("audit_entry")
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_key_key_hash"))

    op.drop_table("api_key")
