"""telemetry_windows: raw check-in reports older than fleet.telemetry_retention_s
rolled up per device, version and window (fleet.telemetry_window_s).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_windows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("cohort", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reports", sa.Integer, nullable=False),
        sa.Column("inferences", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("latency_ms_median", sa.Float, nullable=False),
        sa.Column("latency_ms_p95", sa.Float, nullable=False),
        sa.Column("confidence_mean", sa.Float, nullable=False),
        sa.Column("class_counts", sa.JSON, nullable=False),
        sa.Column("feature_stats", sa.JSON, nullable=False),
        sa.UniqueConstraint(
            "device_id", "version", "window_start", name="uq_telemetry_window"
        ),
    )
    op.create_index(
        "ix_telemetry_windows_window_start", "telemetry_windows", ["window_start"]
    )
    op.create_index("ix_telemetry_windows_cohort", "telemetry_windows", ["cohort"])


def downgrade() -> None:
    op.drop_index("ix_telemetry_windows_cohort", "telemetry_windows")
    op.drop_index("ix_telemetry_windows_window_start", "telemetry_windows")
    op.drop_table("telemetry_windows")
