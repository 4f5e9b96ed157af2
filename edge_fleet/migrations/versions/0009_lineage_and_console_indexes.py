"""models.lineage: where a version came from, as the release that uploaded it read
the registry (MLflow run, gate decision and seal, what started the training run:
the drift event, its cohort and Evidently snapshot, the Prefect flow run; the DVC
hashes of the data); None: uploaded before 0009 or by hand. Kept with the fleet's
copy, so deleting the version in the registry leaves the ledger true.
cohort_checks: each monitor pass's drift check of a device cohort (the console's
cohort status and trend). Indexes for the console's device filters and the
ledger's per-device history.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DEVICE_INDEXES = ("current_version", "health", "profile", "last_seen")


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("lineage", sa.JSON, nullable=True))
    for column in DEVICE_INDEXES:
        op.create_index(f"ix_devices_{column}", "devices", [column])
    op.create_index(
        "ix_telemetry_device_received", "telemetry", ["device_id", "received_at"]
    )
    op.create_table(
        "cohort_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cohort", sa.String(64), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("trigger", sa.Boolean, nullable=False),
        sa.Column("drift_share", sa.Float, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
    )
    op.create_index("ix_cohort_checks_cohort_id", "cohort_checks", ["cohort", "id"])


def downgrade() -> None:
    op.drop_index("ix_cohort_checks_cohort_id", "cohort_checks")
    op.drop_table("cohort_checks")
    op.drop_index("ix_telemetry_device_received", "telemetry")
    for column in DEVICE_INDEXES:
        op.drop_index(f"ix_devices_{column}", "devices")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("lineage")
