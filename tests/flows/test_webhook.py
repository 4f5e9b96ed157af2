"""MLflow's registry webhook reaches the stack: signed deliveries start the release
flow, which records an alias set in the registry (as the MLflow UI does it) in the
alias history; unsigned, forged and stale deliveries are refused."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from flows import registry
from flows.services import (
    WEBHOOK_CACHE_TTL_S,
    ensure_webhook,
    start_service,
    stop_pid,
    webhook_spec,
)
from flows.webhook_receiver import PATH, create_app, expected_signature
from tests.conftest import register_measured_version

SECRET = "test-secret"
EVENT = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-29T00:00:00Z",
        "data": {"name": "m", "alias": "champion", "version": "1"},
    }
)


def _headers(body: str, secret: str = SECRET, age: int = 0) -> dict[str, str]:
    stamp = str(int(time.time()) - age)
    return {
        "X-MLflow-Delivery-Id": "d-1",
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": expected_signature(secret, "d-1", stamp, body.encode()),
    }


@pytest.mark.parametrize(
    ("signing", "reason"),
    [
        (None, "unsigned delivery"),
        ({"secret": "someone-else"}, "signature does not match"),
        ({"age": 3600}, "stale delivery"),
    ],
)
def test_unsigned_forged_and_stale_deliveries_are_refused(signing, reason):
    # Signed when the test runs, not at collection: a delivery ages by the minute.
    headers = {} if signing is None else _headers(EVENT, **signing)
    client = TestClient(create_app(SECRET, "http://127.0.0.1:9"))
    answer = client.post(PATH, content=EVENT, headers=headers)
    assert answer.status_code == 401
    assert reason in answer.json()["detail"]


def test_other_events_are_acknowledged_and_ignored():
    body = json.dumps({"entity": "model_version", "action": "created", "data": {}})
    client = TestClient(create_app(SECRET, "http://127.0.0.1:9"))
    assert client.post(PATH, content=body, headers=_headers(body)).status_code == 204


@pytest.mark.slow
@pytest.mark.integration
def test_alias_set_through_the_rest_api_reaches_the_release_flow(
    mlflow_stack, prefect_harness
):
    from prefect.settings import PREFECT_API_URL

    mlflow_uri = mlflow_stack.tracking_uri  # on SQLite, then on PostgreSQL
    settings = mlflow_stack.model_copy(
        update={"prefect_api_url": PREFECT_API_URL.value()}
    )
    receiver = start_service(webhook_spec(settings), settings)
    try:
        ensure_webhook(settings)
        # The server may hold an older webhook list from earlier alias events.
        time.sleep(WEBHOOK_CACHE_TTL_S + 1)
        client, name = MlflowClient(mlflow_uri), "it-webhook"
        version = register_measured_version(client, name, 0.97)
        # What the MLflow UI sends when a person adds the alias on the version page.
        answer = httpx.post(
            f"{mlflow_uri}/api/2.0/mlflow/registered-models/alias",
            json={"name": name, "alias": "champion", "version": version},
        )
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 90
        changes: list[registry.AliasChange] = []
        while time.monotonic() < deadline and not changes:
            changes = registry.history(client, name)
            time.sleep(1)
        assert [(c.alias, c.to_version, c.who) for c in changes] == [
            ("champion", version, "registry (webhook)")
        ]
        forged = httpx.post(
            settings.webhook_url,
            content=EVENT,
            headers=_headers(EVENT, secret="forged"),
        )
        assert forged.status_code == 401
    finally:
        assert receiver.pid is not None
        stop_pid(receiver.pid)
