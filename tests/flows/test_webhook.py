"""MLflow's registry webhook reaches the stack: signed deliveries start the release
flow, which records an alias set in the registry (as the MLflow UI does it) in the
alias history; unsigned, forged, stale, future-stamped and malformed deliveries are
refused with 401 (never a 5xx), and a delivery taken once is not acted on again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from flows.adapters import registry
from stack.mlflow_auth import ensure_user
from stack.net import free_port
from stack.secrets import stack_secrets
from stack.services import ensure_webhook, webhook_spec
from stack.webhook_receiver import (
    KEEP_DELIVERIES_S,
    PATH,
    DeliveryLog,
    create_app,
    expected_signature,
)
from tests.conftest import register_measured_version
from tests.services import start_service, stop_pid

SECRET = "test-secret"
EVENT = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-29T00:00:00Z",
        "data": {"name": "m", "alias": "champion", "version": "1"},
    }
)


def _headers(
    body: str, secret: str = SECRET, age: int = 0, delivery: str = "d-1"
) -> dict[str, str]:
    stamp = str(int(time.time()) - age)
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": expected_signature(
            secret, delivery, stamp, body.encode()
        ),
    }


@pytest.fixture
def receiver(tmp_path: Path) -> TestClient:
    """The receiver's app in process; no delivery here reaches its callback."""
    deliveries = DeliveryLog(tmp_path / "deliveries")

    def never(event: object) -> None:
        raise AssertionError(f"a refused or ignored delivery was acted on: {event}")

    return TestClient(create_app(SECRET, never, deliveries=deliveries))


@pytest.mark.parametrize(
    ("signing", "reason"),
    [
        (None, "unsigned delivery"),
        ({"secret": "someone-else"}, "signature does not match"),
        ({"age": 3600}, "stale delivery"),
        ({"age": -290}, "s in the future"),
    ],
)
def test_unsigned_forged_stale_and_future_deliveries_are_refused(
    receiver, signing, reason
):
    # Signed when the test runs, not at collection: a delivery ages by the minute.
    headers = {} if signing is None else _headers(EVENT, **signing)
    answer = receiver.post(PATH, content=EVENT, headers=headers)
    assert answer.status_code == 401
    assert reason in answer.json()["detail"]


# Header values as raw bytes (what reaches the server is bytes, not text).
MALFORMED = {
    "non-ASCII signature": ("X-MLflow-Signature", "v1,\u00e9t\u00e9".encode("latin-1")),
    "UTF-8 signature": ("X-MLflow-Signature", "v1,\u043f\u043e\u0434".encode()),
    "non-ASCII delivery id": ("X-MLflow-Delivery-Id", "d-\u00e9".encode("latin-1")),
    "timestamp with a sign": ("X-MLflow-Timestamp", b"-5"),
    "timestamp as a float": ("X-MLflow-Timestamp", b"1764633600.5"),
    "timestamp of 5000 digits": ("X-MLflow-Timestamp", b"9" * 5000),
    "superscript digits": ("X-MLflow-Timestamp", "\u00b2\u00b3".encode("latin-1")),
    "signature without scheme": ("X-MLflow-Signature", b"=="),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_signature_headers_are_401_never_500(receiver, case):
    header, value = MALFORMED[case]
    headers = {k: v.encode() for k, v in _headers(EVENT).items()} | {header: value}
    answer = receiver.post(PATH, content=EVENT, headers=headers)
    assert answer.status_code == 401, (case, answer.text)


def test_other_events_are_acknowledged_and_ignored(receiver):
    body = json.dumps({"entity": "model_version", "action": "created", "data": {}})
    assert receiver.post(PATH, content=body, headers=_headers(body)).status_code == 204


def test_a_signed_alias_event_without_its_fields_is_400(receiver):
    body = json.dumps(
        {"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}
    )
    answer = receiver.post(PATH, content=body, headers=_headers(body))
    assert answer.status_code == 400 and "name, alias and version" in answer.text


def test_the_delivery_log_knows_an_id_for_the_replay_window(tmp_path: Path):
    path = tmp_path / "deliveries"
    log = DeliveryLog(path)
    assert log.first_time("d-1", now=1000.0)
    assert not log.first_time("d-1", now=1001.0)
    assert not DeliveryLog(path).first_time("d-1", now=1002.0)  # after a restart
    assert log.first_time("d-2", now=1002.0)
    # Kept longer than a delivery is accepted (stale after 300 s, 30 s of skew).
    assert KEEP_DELIVERIES_S > 330
    assert log.first_time("d-1", now=1000.0 + KEEP_DELIVERIES_S + 1)


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
        ensure_webhook(settings)  # in effect at once: MLflow caches no webhook list
        client, name = MlflowClient(mlflow_uri), "it-webhook"
        version = register_measured_version(client, name, 0.97)
        # What the MLflow UI sends when a person adds the alias on the version page:
        # refused without a user, and for a user without permission on the model.
        alias = f"{mlflow_uri}/api/2.0/mlflow/registered-models/alias"
        change = {"name": name, "alias": "champion", "version": version}
        assert httpx.post(alias, json=change).status_code == 401
        ensure_user(settings, "ds-webhook", "ds-password-1234", models={})
        who = ("ds-webhook", "ds-password-1234")
        assert httpx.post(alias, json=change, auth=who).status_code == 403
        ensure_user(settings, *who, models={name: "EDIT"})
        answer = httpx.post(alias, json=change, auth=who)
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


def _release_runs(model: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["release"]))
        )
    return [r for r in runs if r.parameters.get("name") == model]


@pytest.mark.slow
@pytest.mark.integration
def test_the_same_delivery_three_times_starts_one_release(
    stack_settings, mlflow_uri, prefect_harness
):
    from prefect.settings import PREFECT_API_URL

    # A receiver of its own: no webhook registered in MLflow points at it.
    settings = stack_settings.model_copy(
        update={"prefect_api_url": PREFECT_API_URL.value(), "webhook_port": free_port()}
    )
    receiver = start_service(webhook_spec(settings), settings)
    try:
        client, name = MlflowClient(mlflow_uri), "it-webhook-dedup"
        version = register_measured_version(client, name, 0.97)
        body = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": name, "alias": "challenger", "version": version},
            }
        )
        headers = _headers(
            body,
            secret=stack_secrets(settings)["webhook_secret"],
            delivery=str(uuid4()),
        )
        answers = [
            httpx.post(settings.webhook_url, content=body, headers=headers, timeout=30)
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [202, 200, 200], [
            a.text for a in answers
        ]
        assert answers[1].json()["duplicate"] == headers["X-MLflow-Delivery-Id"]
        # The one release the first delivery started runs to its end; the copies
        # were answered without starting any.
        deadline = time.monotonic() + 90
        runs = _release_runs(name)
        while not (runs and all(r.state.is_final() for r in runs)):
            assert time.monotonic() < deadline, [(r.name, r.state) for r in runs]
            time.sleep(1)
            runs = _release_runs(name)
        assert len(runs) == 1 and runs[0].state.is_completed(), runs
        assert [(c.alias, c.to_version) for c in registry.history(client, name)] == [
            ("challenger", version)
        ]
    finally:
        assert receiver.pid is not None
        stop_pid(receiver.pid)
