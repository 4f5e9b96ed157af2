"""The base of every params section: unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
