"""FastAPI's 422 for a body that JSON's `Infinity` or `NaN` made invalid.

Python's JSON parser reads `Infinity`/`NaN` as floats, and FastAPI's own 422
answer echoes the offending input, which Starlette then cannot encode (it refuses
non-finite floats): the client saw a 500 instead of the 422 naming the field.
This handler answers the same body FastAPI does, with such numbers as strings.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


async def unprocessable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = jsonable_encoder(exc.errors(), custom_encoder={float: _finite})
    return JSONResponse({"detail": detail}, status_code=422)


def answer_unprocessable(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, unprocessable)
