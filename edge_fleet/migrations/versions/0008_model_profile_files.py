"""models.profile_files: the file a device profile gets where its measured best is
another variant than the version's file ({profile: {variant, filename, sha256,
size, blob}}; None: the version's file for every profile, or stored before 0008).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("profile_files", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("profile_files")
