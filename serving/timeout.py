"""BentoML's request timeout (`traffic.timeout`), with its timer cancelled when the
request ends.

BentoML 1.4.40's `TimeoutMiddleware` arms `loop.call_later(timeout, ...)` for every
request and drops the handle: the timer, the request's future and its context stay
alive for the whole timeout after the answer has gone. At 3,000 requests a second
and a 30 s timeout that is 90,000 timers per worker; they outlive young
collections, so the full collections that scan them ran every few seconds and
stopped the worker for 10-40 ms each (the p99 under load), and memory grew with
the request rate. `install()` puts this class in its place before the app is built
(BentoML imports it from `bentoml._internal.server.http.traffic` when it builds
the middleware list); the behaviour is BentoML's otherwise: a request not answered
within the timeout is cancelled and gets a 504."""

from __future__ import annotations

import asyncio
from typing import Any

import bentoml
from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

FIXED_IN = "1.4.40"  # the BentoML version whose middleware this replaces


class TimeoutMiddleware(traffic.TimeoutMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, started)

        async def _send(message: Message) -> None:
            if not started.done():
                started.set_result(None)
            await send(message)

        request = asyncio.ensure_future(self.app(scope, receive, _send))
        try:
            await started
        except TimeoutError:  # asyncio.TimeoutError, set by the timer
            if request.cancel():
                await JSONResponse(
                    {
                        "error": "Not able to process the request in "
                        f"{self.timeout} seconds"
                    },
                    status_code=504,
                )(scope, receive, send)
        else:
            await request
        finally:
            timer.cancel()  # the line upstream lacks


def install() -> None:
    """Use this middleware wherever BentoML builds its own (only for the version
    it was written against: another one may have fixed or changed it)."""
    if bentoml.__version__ == FIXED_IN:
        traffic.TimeoutMiddleware = TimeoutMiddleware  # type: ignore[misc]
