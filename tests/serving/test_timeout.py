"""Serving's request timeout (serving/timeout.py): a request answered in time leaves
no timer behind (BentoML 1.4.40's left one per request alive for the whole timeout,
with its future and context), one that is not answered in time gets BentoML's 504,
and the service's app uses it in BentoML's place."""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic
from starlette.types import Receive, Scope, Send

from serving.timeout import TimeoutMiddleware, install

SCOPE = {"type": "http", "method": "POST", "path": "/predict", "headers": []}


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"[]"})


CANCELLED: list[str] = []


async def never(scope: Scope, receive: Receive, send: Send) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        CANCELLED.append(scope["path"])
        raise


async def call(app, n: int) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    return sent


def armed_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers still waiting to fire on this (asyncio's own) loop."""
    return sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]


def test_a_request_answered_in_time_leaves_no_timer_behind():
    async def run(middleware) -> tuple[int, int]:
        sent = await call(middleware(answer, timeout=30), 200)
        statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
        return armed_timers(asyncio.get_running_loop()), len(statuses)

    assert asyncio.run(run(TimeoutMiddleware)) == (0, 200)
    # BentoML's own, for the record: one live timer per request for 30 s. When an
    # upgrade fixes it, this fails, and serving/timeout.py can go.
    assert asyncio.run(run(traffic.TimeoutMiddleware)) == (200, 200)


def test_a_request_not_answered_in_time_gets_a_504_and_is_cancelled():
    async def run() -> tuple[list[dict], int]:
        sent = await call(TimeoutMiddleware(never, timeout=0.05), 1)
        await asyncio.sleep(0)  # the cancelled request runs once more, to end
        return sent, armed_timers(asyncio.get_running_loop())

    sent, timers = asyncio.run(run())
    assert sent[0]["status"] == 504
    assert b"Not able to process the request in 0.05 seconds" in sent[1]["body"]
    assert CANCELLED == ["/predict"] and timers == 0


def test_the_service_uses_it_in_bentomls_place():
    install()
    from serving.service import Predictor

    app = Predictor.to_asgi(is_main=True)
    layers = [m.cls for m in app.user_middleware]
    assert TimeoutMiddleware in layers
    assert all(cls is not TimeoutMiddleware.__mro__[1] for cls in layers)
