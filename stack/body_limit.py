"""`BodyLimit`: ASGI middleware that bounds a request's body before anything reads
it. A declared `Content-Length` over the limit is answered 413 without reading a
byte (and before any authentication); a chunked body is counted as it streams and
refused at the first chunk past the limit. Used by every HTTP service of the stack
(fleet server, webhook receiver, serving)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from `receive` past the limit: FastAPI passes an HTTPException on
    (any other error while reading a body becomes its 400)."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(413, f"request body over {limit} bytes ({what})")


class BodyLimit:
    """`limits` maps a path prefix to its own limit (the longest matching prefix
    wins); `max_bytes` bounds every other path. `what` names the setting in the
    answer, so a caller knows what to change."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        limits: dict[str, tuple[int, str]] | None = None,
        what: str = "the server's limit",
    ) -> None:
        self.app, self.max_bytes, self.what = app, max_bytes, what
        self.limits = sorted((limits or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> tuple[int, str]:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.max_bytes, self.what

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await refuse(send, 413 if declared.isdigit() else 400, limit, what)
            return
        state = {"received": 0, "exceeded": False, "started": False}

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["exceeded"] = True
                    raise BodyTooLarge(limit, what)
            return message

        async def guarded(message: Message) -> None:
            # Past the limit, the answer is 413 whatever the app made of the error
            # (a framework that turns a failed read into 400 or 500).
            if state["exceeded"]:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await refuse(send, 413, limit, what)
                return
            state["started"] = state["started"] or (
                message["type"] == "http.response.start"
            )
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge:
            if not state["started"]:
                state["started"] = True
                await refuse(send, 413, limit, what)


async def refuse(send: Send, status: int, limit: int, what: str) -> None:
    detail = (
        f"request body over {limit} bytes ({what})"
        if status == 413
        else "Content-Length must be a whole number of bytes"
    )
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
