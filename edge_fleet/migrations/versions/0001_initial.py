"""The fleet database as the first fleet server made it (63a8c2c).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    devices()
    models()
    rollouts()
    telemetry()


def devices() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("cohort", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("current_version", sa.String(32), nullable=True),
        sa.Column("slot", sa.String(1), nullable=True),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("failed_version", sa.String(32), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("enrolled_at", WHEN, nullable=False),
        sa.Column("last_seen", WHEN, nullable=True),
    )
    op.create_index("ix_devices_token_sha256", "devices", ["token_sha256"], unique=True)
    op.create_index("ix_devices_cohort", "devices", ["cohort"])


def models() -> None:
    op.create_table(
        "models",
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("filename", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("profiles", sa.JSON(), nullable=False),
        sa.Column("blob", sa.String(500), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
    )


def rollouts() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "version", sa.String(32), sa.ForeignKey("models.version"), nullable=False
        ),
        sa.Column("from_version", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("stage_started_at", WHEN, nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("cause", sa.JSON(), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
    )
    op.create_index("ix_rollouts_state", "rollouts", ["state"])


def telemetry() -> None:
    op.create_table(
        "telemetry",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "device_id", sa.String(128), sa.ForeignKey("devices.id"), nullable=False
        ),
        sa.Column("cohort", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
        sa.Column("inferences", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("latency_ms_median", sa.Float(), nullable=False),
        sa.Column("latency_ms_p95", sa.Float(), nullable=False),
        sa.Column("confidence_mean", sa.Float(), nullable=False),
        sa.Column("class_counts", sa.JSON(), nullable=False),
        sa.Column("feature_stats", sa.JSON(), nullable=False),
        sa.Column("samples", sa.JSON(), nullable=True),
    )
    for column in ("received_at", "device_id", "cohort", "version"):
        op.create_index(f"ix_telemetry_{column}", "telemetry", [column])


def downgrade() -> None:
    for table in ("telemetry", "rollouts", "models", "devices"):
        op.drop_table(table)
