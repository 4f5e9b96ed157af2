"""The receiver of MLflow's registry webhooks: verifies each delivery's HMAC
signature (MLflow's `v1` scheme over delivery id, timestamp and body) and its
freshness, then starts the `release` flow for alias changes.

    python -m flows.webhook_receiver --host 127.0.0.1 --port 5055
(the secret comes from EDGELOOP_WEBHOOK_SECRET; `edgeloop up` starts it)"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import time

import uvicorn
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request, Response

SIGNATURE = "X-MLflow-Signature"
TIMESTAMP = "X-MLflow-Timestamp"
DELIVERY = "X-MLflow-Delivery-Id"
MAX_AGE_S = 300
PATH = "/mlflow/webhook"


def expected_signature(secret: str, delivery: str, timestamp: str, body: bytes) -> str:
    content = f"{delivery}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: dict[str, str], body: bytes, now: float | None = None
) -> None:
    """Raise 401 unless the delivery is signed with our secret and recent."""
    signature, timestamp, delivery = (
        headers.get(h.lower()) for h in (SIGNATURE, TIMESTAMP, DELIVERY)
    )
    if not (signature and timestamp and delivery):
        raise HTTPException(
            401,
            f"unsigned delivery: {SIGNATURE}, {TIMESTAMP} and {DELIVERY} are required",
        )
    try:
        age = abs((now or time.time()) - int(timestamp))
    except ValueError:
        raise HTTPException(401, f"{TIMESTAMP} must be unix seconds") from None
    if age > MAX_AGE_S:
        raise HTTPException(
            401,
            f"stale delivery ({age:.0f} s old, at most "
            f"{MAX_AGE_S}): refused as a possible replay",
        )
    if not hmac.compare_digest(
        signature, expected_signature(secret, delivery, timestamp, body)
    ):
        raise HTTPException(401, "signature does not match")


def create_app(
    secret: str,
    tracking_uri: str,
    serving_url: str | None = None,
    fleet_url: str | None = None,
) -> FastAPI:
    app = FastAPI(title="edgeloop MLflow webhook receiver")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(PATH, status_code=202)
    async def receive(request: Request, background: BackgroundTasks) -> Response:
        body = await request.body()
        verify(secret, dict(request.headers), body)
        try:
            event = json.loads(body)
            entity, action, data = event["entity"], event["action"], event["data"]
        except (ValueError, KeyError, TypeError):
            raise HTTPException(
                400, "expected MLflow's webhook JSON: entity, action, data"
            ) from None
        if (entity, action) != ("model_version_alias", "created"):
            return Response(status_code=204)
        from flows.release import release

        background.add_task(
            release,
            tracking_uri=tracking_uri,
            name=data["name"],
            alias=data["alias"],
            version=str(data["version"]),
            serving_url=serving_url,
            fleet_url=fleet_url,
        )
        return Response(
            content=json.dumps({"release": data}),
            status_code=202,
            media_type="application/json",
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--serving-url", help="the BentoML service to refresh")
    parser.add_argument("--fleet-url", help="the fleet server a champion goes to")
    args = parser.parse_args()
    secret = os.environ.get("EDGELOOP_WEBHOOK_SECRET")
    if not secret:
        parser.error("EDGELOOP_WEBHOOK_SECRET is not set")
    uvicorn.run(
        create_app(secret, args.tracking_uri, args.serving_url, args.fleet_url),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
