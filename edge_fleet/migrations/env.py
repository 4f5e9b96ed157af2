"""Alembic's environment for the fleet database: run by `edge_fleet.db.migrate` on
the connection it passes (no alembic.ini: the URL is the fleet server's setting)."""

from alembic import context

from edge_fleet.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE
)
with context.begin_transaction():
    context.run_migrations()
