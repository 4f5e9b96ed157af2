"""telemetry.benchmark: the on-device benchmark a device took in the smoke test of
the version it reports on (edge_fleet/device/benchmark.py: that file against the one
it ran before, timed together; None: no benchmark, or reported before 0007).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("telemetry") as batch:
        batch.add_column(sa.Column("benchmark", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("telemetry") as batch:
        batch.drop_column("benchmark")
