"""Schemathesis fuzzes the fleet server's and the webhook receiver's own OpenAPI
schemas, served by the real processes on loopback: every generated case is sent
once with valid credentials and once with invalid ones (a wrong token, a non-ASCII
one, a forged signature). No answer may be a 5xx, and no answer may break the
schema's own response models. Bounded and seeded: MAX_EXAMPLES cases per
operation, derandomized, so a run is repeatable."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from stack.net import free_port
from stack.secrets import SECRET_ENV
from stack.services import webhook_spec
from stack.settings import Settings
from stack.webhook_receiver import expected_signature
from tests.edge_fleet.conftest import ADMIN, FleetServer, make_fleet_server
from tests.services import start_service, stop_pid

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 40
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    positive_data_acceptance,
]
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
WRONG = ["Bearer wrong-token", "Bearer caf\xe9".encode("latin-1").decode("latin-1")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    server = make_fleet_server(tmp_path_factory.mktemp("fuzz-fleet"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def enroll_code(fleet: FleetServer) -> str:
    """A batch code the fuzzer's enrollments may use (any profile, any cohort)."""
    return fleet.enroll_code(devices=100_000)


@pytest.fixture(scope="module")
def device_token(fleet: FleetServer, enroll_code: str) -> str:
    enrolled = httpx.post(
        f"{fleet.url}/v1/enroll",
        json={"device_id": "fuzz-1", "profile": "gateway", "cohort": "north"},
        headers={"X-Enroll-Code": enroll_code},
    )
    assert enrolled.status_code == 201, enrolled.text
    return enrolled.json()["token"]


@pytest.fixture(scope="module")
def fleet_schema(fleet: FleetServer):
    schema = schemathesis.openapi.from_url(f"{fleet.url}/openapi.json")
    for name, rule in (
        ("POST /v1/devices/{device_id}/checkin", consistent_report),
        ("POST /v1/admin/enrollment-codes", one_device_per_bound_code),
    ):
        schema.hook("map_case").apply_to(name=name)(taught(rule))
    return schema


# Rules between fields that JSON Schema cannot state: the generator is taught them
# (schemathesis' own remedy for a schema narrower than the server's checks), so a
# 422 for a generated body is a schema that says less than the server checks. The
# server's refusals of bodies breaking them are tests/edge_fleet/test_server_api.py.
# A case hook, not a body hook: schemathesis' coverage phase applies case hooks only.


def taught(rule):
    """`rule` applied to the body of each positive case (a negative case keeps
    whatever the generator broke)."""

    def map_case(_context, case):
        if case.meta is None or case.meta.generation.mode.is_positive:
            case.body = rule(case.body)
        return case

    return map_case


def consistent_report(body):
    """A check-in whose telemetry adds up: the four feature lists of one length,
    min <= mean <= max, std >= 0, samples of that width, errors <= inferences,
    class counts summing to inferences - errors, a benchmark of the report's
    version."""
    report = body.get("telemetry") if isinstance(body, dict) else None
    if not isinstance(report, dict) or not isinstance(
        stats := report.get("feature_stats"), dict
    ):
        return body
    names = ("mean", "std", "min", "max")
    if not all(isinstance(stats.get(n), list) for n in names):
        return body
    width = min(len(stats[n]) for n in names)
    low, high = (
        [min(a, b) for a, b in zip(stats["min"], stats["max"], strict=False)],
        [max(a, b) for a, b in zip(stats["min"], stats["max"], strict=False)],
    )
    report["feature_stats"] = {
        "mean": [
            min(max(m, lo), hi)
            for m, lo, hi in zip(stats["mean"], low, high, strict=False)
        ][:width],
        "std": [abs(v) for v in stats["std"][:width]],
        "min": low[:width],
        "max": high[:width],
    }
    if isinstance(report.get("samples"), list):
        report["samples"] = [(row + [0.0] * width)[:width] for row in report["samples"]]
    inferences, errors = report.get("inferences"), report.get("errors")
    if isinstance(inferences, int | float) and isinstance(errors, int | float):
        # JSON Schema's integers include 1e6 written as 1000000.0.
        report["errors"] = errors = int(min(errors, inferences))
        answered = int(inferences) - errors
        report["class_counts"] = {"0": answered} if answered else {}
    if isinstance(report.get("benchmark"), dict):
        report["benchmark"]["version"] = report.get("version")
    return body


def one_device_per_bound_code(body):
    """A code bound to one device_id enrolls that one device."""
    if isinstance(body, dict) and body.get("device_id") is not None:
        body["devices"] = 1
    return body


@pytest.fixture(scope="module")
def receiver(stack_settings: Settings) -> Iterator[str]:
    settings = stack_settings.model_copy(update={"webhook_port": free_port()})
    started = start_service(webhook_spec(settings), settings)
    yield f"http://{settings.host}:{settings.webhook_port}"
    stop_pid(started.pid)


@pytest.fixture(scope="module")
def receiver_schema(receiver: str):
    return schemathesis.openapi.from_url(f"{receiver}/openapi.json")


fleet_api = schemathesis.pytest.from_fixture("fleet_schema")
receiver_api = schemathesis.pytest.from_fixture("receiver_schema")


@fleet_api.parametrize()
@FUZZ
def test_the_fleet_api_never_answers_5xx(case, fleet, device_token, enroll_code):
    admin = case.path.startswith("/v1/admin")
    valid = f"Bearer {ADMIN if admin else device_token}"
    for authorization, code in [(valid, enroll_code), *((w, w) for w in WRONG)]:
        case.call_and_validate(
            base_url=fleet.url,
            headers={"Authorization": authorization, "X-Enroll-Code": code},
            checks=CHECKS,
        )


@receiver_api.parametrize()
@FUZZ
def test_the_webhook_receiver_never_answers_5xx(case, receiver):
    secret = os.environ[SECRET_ENV["webhook_secret"]]
    body = case.as_transport_kwargs(base_url=receiver).get("data") or b""
    body = body.encode() if isinstance(body, str) else body
    stamp = str(int(time.time()))
    for key in (secret, "forged"):
        signature = expected_signature(key, "fuzz-1", stamp, body)
        case.call_and_validate(
            base_url=receiver,
            headers={
                "X-MLflow-Delivery-Id": "fuzz-1",
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": signature,
            },
            checks=CHECKS,
        )
