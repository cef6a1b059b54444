"""The calibration monitor: blind samples drawn for audit, and acknowledgements of monitor alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blind_sample",
        sa.Column("verification_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("audit_rate", sa.Float(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["verification_id"], ["verification.id"]),
        sa.PrimaryKeyConstraint("verification_id"),
    )
    op.create_table(
        "alert_acknowledgement",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("alert_key", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("acknowledged_by", sa.Integer(), nullable=True),
        sa.Column("acknowledged_by_user", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["acknowledged_by"], ["api_key.id"]),
        sa.ForeignKeyConstraint(["acknowledged_by_user"], ["user_account.username"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert_acknowledgement", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_acknowledgement_alert_key"), ["alert_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_alert_acknowledgement_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alert_acknowledgement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_acknowledgement_created_at"))
        batch_op.drop_index(batch_op.f("ix_alert_acknowledgement_alert_key"))
    op.drop_table("alert_acknowledgement")
    op.drop_table("blind_sample")
