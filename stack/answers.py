"""`answers`: the error statuses a route of ours may answer, for its OpenAPI schema
(FastAPI's `responses=`), each with the `{"detail": "..."}` body HTTPException
gives. A status a route answers that its schema does not list is a failure of the
fuzz test (schemathesis' status_code_conformance)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    """What every refusal of ours says: one line naming the key, value or file."""

    detail: str


def answers(**why: str) -> dict[int | str, dict[str, Any]]:
    """`answers(s401="...", s404="...")`: each status with the reason it is given."""
    return {
        int(name.removeprefix("s")): {"model": Problem, "description": reason}
        for name, reason in why.items()
    }
