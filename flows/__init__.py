"""Prefect flows and tasks that chain the stages, the local services, and the CLI."""
