"""The receiver of MLflow's registry webhooks: verifies each delivery's HMAC
signature (MLflow's `v1` scheme over delivery id, timestamp and body) and its
freshness, answers a delivery it has already taken (MLflow retries with the same
delivery id) without acting on it again, and hands each new alias change to the
callback it was made with (the `release` flow: `python -m flows.release`, which
`edgeloop up` starts as the `webhook` service)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stack.answers import answers
from stack.body_limit import BodyLimit

SIGNATURE = "X-MLflow-Signature"
TIMESTAMP = "X-MLflow-Timestamp"
DELIVERY = "X-MLflow-Delivery-Id"
MAX_AGE_S = 300  # older deliveries are refused as possible replays
MAX_SKEW_S = 30  # how far ahead of this machine's clock a sender's may be
# Delivery ids are kept longer than any delivery is accepted: a replay of a fresh
# delivery is a duplicate; a replay after that is stale.
KEEP_DELIVERIES_S = 2 * (MAX_AGE_S + MAX_SKEW_S)
PATH = "/mlflow/webhook"
# MLflow's deliveries are a few hundred bytes; anything over this is refused (413)
# before it is read or its signature checked.
MAX_BODY_BYTES = 65536
UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
DELIVERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # a safe file name


def expected_signature(secret: str, delivery: str, timestamp: str, body: bytes) -> str:
    content = f"{delivery}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: dict[str, str], body: bytes, now: float | None = None
) -> str:
    """The delivery id of a delivery signed with our secret and recent; 401 for
    anything else, malformed headers included."""
    signature, timestamp, delivery = (
        headers.get(h.lower()) for h in (SIGNATURE, TIMESTAMP, DELIVERY)
    )
    if not (signature and timestamp and delivery):
        raise HTTPException(
            401,
            f"unsigned delivery: {SIGNATURE}, {TIMESTAMP} and {DELIVERY} are required",
        )
    if not UNIX_SECONDS.fullmatch(timestamp):
        raise HTTPException(401, f"{TIMESTAMP} must be unix seconds (1-12 digits)")
    if not DELIVERY_ID.fullmatch(delivery):
        raise HTTPException(
            401,
            f"{DELIVERY} must be a letter or digit, then up to 127 letters, digits "
            "or . _ : -",
        )
    age = (time.time() if now is None else now) - int(timestamp)
    if age > MAX_AGE_S:
        raise HTTPException(
            401,
            f"stale delivery ({age:.0f} s old, at most "
            f"{MAX_AGE_S}): refused as a possible replay",
        )
    if age < -MAX_SKEW_S:
        raise HTTPException(
            401,
            f"delivery stamped {-age:.0f} s in the future (at most {MAX_SKEW_S} s "
            "of clock skew): refused",
        )
    if not signature.isascii() or not hmac.compare_digest(
        signature, expected_signature(secret, delivery, timestamp, body)
    ):
        raise HTTPException(401, "signature does not match")
    return delivery


class DeliveryLog:
    """The delivery ids taken in the last `keep_s` seconds: one empty file per id in
    a folder, created exclusively (so one of two threads or processes taking the
    same delivery wins), its modification time when it was taken; kept across a
    restart, pruned as deliveries come."""

    def __init__(self, folder: Path, keep_s: float = KEEP_DELIVERIES_S) -> None:
        self.folder, self.keep_s = folder, keep_s
        folder.mkdir(parents=True, exist_ok=True)

    def first_time(self, delivery: str, now: float | None = None) -> bool:
        """Record `delivery` (an id `verify` accepted: a safe file name); False
        when it was taken before, within keep_s."""
        now = time.time() if now is None else now
        for old in self.folder.iterdir():
            with suppress(FileNotFoundError):  # another thread pruned it
                if old.stat().st_mtime < now - self.keep_s:
                    old.unlink()
        try:
            fd = os.open(self.folder / delivery, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
        os.close(fd)
        os.utime(self.folder / delivery, (now, now))
        return True


class AliasEvent(BaseModel):
    """The `data` of a `model_version_alias.created` delivery."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=256)
    alias: str = Field(min_length=1, max_length=256)
    version: str | int


ALIAS_CREATED = ("model_version_alias", "created")


def delivery_schema() -> dict:
    """The body, as MLflow sends it: any entity and action, and for an alias
    change (the one event acted on) `data` naming the model, alias and version."""
    return {
        "type": "object",
        "required": ["entity", "action", "data"],
        "properties": {
            "entity": {"type": "string"},
            "action": {"type": "string"},
            "data": {"type": "object"},
        },
        "if": {
            "required": ["entity", "action"],
            "properties": {
                "entity": {"const": ALIAS_CREATED[0]},
                "action": {"const": ALIAS_CREATED[1]},
            },
        },
        "then": {"properties": {"data": AliasEvent.model_json_schema()}},
    }


def receiver_openapi() -> dict:
    """What `receive` reads (it reads the raw body: the signature is over its
    bytes) and answers, for the route's OpenAPI schema."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": delivery_schema()}},
        }
    }


def create_app(
    secret: str,
    on_alias_change: Callable[[AliasEvent], None],
    *,
    deliveries: DeliveryLog,
) -> FastAPI:
    """The receiver's app: `on_alias_change` runs after the answer, once per
    delivery id (FastAPI's background tasks)."""
    app = FastAPI(title="edgeloop MLflow webhook receiver")
    app.add_middleware(
        BodyLimit, max_bytes=MAX_BODY_BYTES, what="the webhook receiver's limit"
    )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        PATH,
        status_code=202,
        openapi_extra=receiver_openapi(),
        responses={
            200: {"description": "a delivery taken before: not acted on again"},
            202: {"description": "an alias change: the release starts"},
            204: {"description": "another event: nothing to do"},
        }
        | answers(
            s400="not MLflow's webhook JSON (entity, action, data), or an alias "
            "change without name, alias and version; or Content-Length not a number",
            s401="unsigned, wrongly signed, stale or future-stamped delivery",
            s413=f"body over {MAX_BODY_BYTES} bytes",
        ),
    )
    async def receive(request: Request, background: BackgroundTasks) -> Response:
        body = await request.body()
        delivery = verify(secret, dict(request.headers), body)
        try:
            event = json.loads(body)
            entity, action, data = event["entity"], event["action"], event["data"]
        except (ValueError, KeyError, TypeError):
            raise HTTPException(
                400, "expected MLflow's webhook JSON: entity, action, data"
            ) from None
        if (entity, action) != ALIAS_CREATED:
            return Response(status_code=204)
        try:
            alias = AliasEvent.model_validate(data)
        except ValidationError as exc:
            raise HTTPException(
                400,
                "model_version_alias.created: expected data with name, alias and "
                f"version ({exc.error_count()} errors)",
            ) from None
        if not deliveries.first_time(delivery):
            return _json({"duplicate": delivery, "release": "not started again"}, 200)
        background.add_task(on_alias_change, alias)
        return _json({"release": data}, 202)

    return app


def _json(content: dict, status: int) -> Response:
    return Response(
        content=json.dumps(content), status_code=status, media_type="application/json"
    )
