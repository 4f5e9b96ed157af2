"""Every front door bounds what it reads and refuses what it cannot check, as real
processes on loopback: 200 MB sent to the fleet server and the webhook receiver
(declared or chunked, no credentials) is answered 413 with the server's memory
growing by less than 10 MB; a non-ASCII credential is a 401, never a 500;
enrollment fields and list limits are bounded. (Serving's body limit is checked in
tests/serving/test_service.py, on a served champion.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from stack.net import free_port
from stack.services import webhook_spec
from stack.settings import Settings
from tests.edge_fleet.conftest import (
    ADMIN,
    FleetServer,
    make_fleet_server,
    running,
)
from tests.oversized import MB, send_oversized, tree_rss
from tests.services import Started, start_service, stop_pid

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    with running(make_fleet_server(tmp_path_factory.mktemp("front-doors"))) as server:
        yield server


@pytest.fixture(scope="module")
def receiver(stack_settings: Settings) -> Iterator[tuple[Started, str]]:
    settings = stack_settings.model_copy(update={"webhook_port": free_port()})
    started = start_service(webhook_spec(settings), settings)
    yield started, settings.webhook_url
    stop_pid(started.pid)


def refused_within_memory(pid: int, url: str, **how: object) -> int:
    """Send 200 MB; the status, after checking the server's memory held."""
    before = tree_rss(pid)
    refusal = send_oversized(url, **how)
    grown = tree_rss(pid) - before
    assert grown < 10 * MB, f"{url}: memory grew by {grown / MB:.1f} MB"
    assert refusal.sent < 200 * MB, "the server read the whole body"
    return refusal.status


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_200_mb_to_the_fleet_server_is_413_before_it_is_read(fleet, chunked):
    """A declared length over the limit is refused before authentication; a chunked
    body is refused at the limit, or (the admin routes, which check the token
    before reading any body) with 401 before a byte of it is read."""
    assert fleet.proc is not None
    for path, refusals in (
        ("/v1/devices/d-1/checkin", {413}),
        ("/v1/enroll", {413}),
        ("/v1/admin/models/9", {401, 413} if chunked else {413}),
    ):
        url = fleet.url + path
        status = refused_within_memory(fleet.proc.pid, url, chunked=chunked)
        assert status in refusals, (path, status)
    assert httpx.get(f"{fleet.url}/health").status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_200_mb_to_the_webhook_receiver_is_413_before_it_is_read(receiver, chunked):
    started, url = receiver
    assert refused_within_memory(started.pid, url, chunked=chunked) == 413


def test_a_body_just_over_a_limit_is_413_and_names_the_setting(fleet):
    over = b"{" + b" " * fleet.cfg.max_request_bytes + b"}"
    answer = httpx.post(f"{fleet.url}/v1/enroll", content=over)
    assert answer.status_code == 413
    assert "fleet.max_request_bytes" in answer.json()["detail"]


@pytest.mark.parametrize(
    "header",
    [
        {"Authorization": "Bearer caf\xe9".encode("latin-1")},
        {"Authorization": "Bearer \u00e9t\u00e9".encode()},
        {"X-Enroll-Code": "cl\xe9".encode("latin-1")},
    ],
)
def test_a_non_ascii_credential_is_401_not_500(fleet, header):
    body = {"device_id": "d-ascii", "profile": "gateway", "cohort": "north"}
    for method, path in (
        ("GET", "/v1/admin/devices"),
        ("POST", "/v1/enroll"),
        ("GET", "/tuf/metadata/timestamp.json"),
    ):
        answer = httpx.request(
            method,
            fleet.url + path,
            headers=header,
            json=body if method == "POST" else None,
        )
        assert answer.status_code == 401, (path, answer.status_code, answer.text)


@pytest.mark.parametrize(
    "field",
    [
        {"profile": "../../etc"},
        {"cohort": "x" * 65},
        {"device_id": "-starts-with-dash"},
        {"labels": {"k" * 65: "v"}},
        {"labels": {"site": "v" * 257}},
    ],
)
def test_enrollment_fields_have_length_and_pattern_limits(fleet, field):
    body = {"device_id": "d-limits", "profile": "gateway", "cohort": "north"} | field
    answer = httpx.post(
        f"{fleet.url}/v1/enroll",
        json=body,
        headers={"X-Enroll-Code": fleet.enroll_code()},
    )
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize("limit", ["-1", "0", "10001", str(10**12)])
def test_list_endpoints_cap_their_limit(fleet, limit):
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for path in ("/v1/admin/telemetry", "/v1/admin/devices", "/v1/admin/rollouts"):
        answer = httpx.get(fleet.url + path, params={"limit": limit}, headers=auth)
        assert answer.status_code == 422, (path, limit, answer.text)
