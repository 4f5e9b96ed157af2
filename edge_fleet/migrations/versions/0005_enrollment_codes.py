"""Per-device and per-batch enrollment codes (bound to a device id or a device count,
and to the profiles and cohorts they allow), and devices.revoked_at.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollment_codes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("profiles", sa.JSON, nullable=False),
        sa.Column("cohorts", sa.JSON, nullable=False),
        sa.Column("max_devices", sa.Integer, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_enrollment_codes_code_sha256",
        "enrollment_codes",
        ["code_sha256"],
        unique=True,
    )
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("revoked_at")
    op.drop_index("ix_enrollment_codes_code_sha256", "enrollment_codes")
    op.drop_table("enrollment_codes")
