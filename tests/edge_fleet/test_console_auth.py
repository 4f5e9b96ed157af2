"""The console's session and its refusals, in process (FastAPI's TestClient on the
real app): a wrong token, an action without a session or without its CSRF token,
an action from another site, a login that would send the browser elsewhere, a
session signed for another admin token. The browser's story: test_console.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from components.config import FleetConfig
from edge_fleet.server import create_app
from edge_fleet.server.console import COOKIE
from tests.edge_fleet.conftest import make_root

ADMIN = "console-admin-secret"
SITE = "http://testserver"


def app_for(state: Path, token: str):
    make_root(state, state.parent / f"{state.name}-root-keys")
    return create_app(state, FleetConfig(), model_name="it-console", admin_token=token)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(app_for(tmp_path / "fleet", ADMIN), follow_redirects=False) as c:
        yield c


def logged_in(client: TestClient, next_page: str = "/ui/enrollment") -> str:
    """Log in; the CSRF token of the session, read from a page's form."""
    reply = client.post("/ui/login", data={"token": ADMIN, "next": next_page})
    assert reply.status_code == 303, reply.text
    cookie = reply.headers["set-cookie"]
    for flag in ("HttpOnly", "Path=/ui", "SameSite=strict"):
        assert flag.lower() in cookie.lower(), cookie
    page = client.get("/ui/enrollment")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_pages_load_nothing_from_elsewhere_and_are_not_framed(client):
    logged_in(client)
    page = client.get("/ui/devices")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert not re.search(r'(src|href)="(https?:)?//', page.text), (
        "a file from elsewhere"
    )


def test_pages_ask_for_a_login_and_a_wrong_token_is_refused(client):
    page = client.get("/ui/devices?cohort=north")
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%2Fdevices%3Fcohort%3Dnorth"
    wrong = client.post("/ui/login", data={"token": "guess"})
    assert wrong.status_code == 401 and "not the fleet&#39;s admin token" in wrong.text
    assert COOKIE not in wrong.headers.get("set-cookie", "")


def test_an_action_needs_the_session_its_csrf_token_and_this_site(client):
    assert client.post("/ui/enrollment", data={"devices": "2"}).status_code == 403
    csrf = logged_in(client)
    no_token = client.post("/ui/enrollment", data={"devices": "2"})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    wrong = client.post("/ui/enrollment", data={"devices": "2", "csrf": csrf + "x"})
    assert wrong.status_code == 403
    elsewhere = client.post(
        "/ui/enrollment",
        data={"devices": "2", "csrf": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert elsewhere.status_code == 403 and "another site" in elsewhere.text
    issued = client.post(
        "/ui/enrollment", data={"devices": "2", "csrf": csrf}, headers={"Origin": SITE}
    )
    assert issued.status_code == 200
    assert re.search(r'id="issued-code">[A-Za-z0-9_-]{24,}<', issued.text)
    # htmx sends the token as a header instead of a form field.
    expired = client.post("/ui/enrollment/1/expire", headers={"X-CSRF-Token": csrf})
    assert expired.status_code == 303


def test_a_login_only_sends_the_browser_to_a_page_of_the_console(client):
    for elsewhere in ("https://evil.example/", "//evil.example/ui", "/v1/admin/fleet"):
        reply = client.post("/ui/login", data={"token": ADMIN, "next": elsewhere})
        assert reply.headers["location"] == "/ui/rollouts", elsewhere
    reply = client.post(
        "/ui/login", data={"token": ADMIN}, headers={"Origin": "http://evil.example"}
    )
    assert reply.status_code == 403


def test_a_session_of_another_admin_token_is_not_taken(client, tmp_path):
    logged_in(client)
    session = client.cookies[COOKIE]
    with TestClient(app_for(tmp_path / "other", "rotated-admin-token")) as other:
        other.cookies[COOKIE] = session
        page = other.get("/ui/rollouts", follow_redirects=False)
        assert page.status_code == 303 and "/ui/login" in page.headers["location"]
