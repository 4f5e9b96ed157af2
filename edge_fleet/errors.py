"""Errors the fleet server answers with a status code and a message."""

from __future__ import annotations


class FleetConflict(Exception):
    """A request that cannot be done in the fleet's current state (409 unless told)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message, self.status = message, status
