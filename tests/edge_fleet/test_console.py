"""The fleet console (/ui) in Chromium, driven by Playwright, on a real fleet server
and agents: log in, watch a rollout advance through its stages, pause and resume
it, find a drifted cohort's devices, open one device's ledger; a refused action
without a session. Each page's screenshot lands in reports/browser/console-*.png
(the docs' images are copied from there)."""

from __future__ import annotations

import re
import threading

import pytest

from tests.browser import SCREENSHOTS, chromium
from tests.edge_fleet.conftest import (
    ADMIN,
    drive,
    make_agents,
    make_fleet_server,
    running,
)
from tests.edge_fleet.test_ledger import DRIFTED, FIRST

pytestmark = pytest.mark.integration

LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
DRIFTED_SOUTH = DRIFTED | {"drift_target": "south"}
SNAPSHOT = "http://127.0.0.1:9/projects/p/reports/snap-17"  # never opened


def stepping(agents, stop: threading.Event) -> threading.Thread:
    """The devices keep checking in while the browser watches."""

    def run() -> None:
        while not stop.wait(0.1):
            for agent in agents:
                agent.step()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def report_drift(admin) -> None:
    """What the monitor reports at each pass (flows/monitor.py report_cohorts):
    south drifts over four passes, north does not."""
    for share in (0.1, 0.2, 0.55, 0.7):
        admin.report_cohort_check(
            "south",
            {
                "drifted": share > 0.5,
                "flagged": share > 0.6,
                "trigger": share > 0.6,
                "drift_share": share,
                "devices": 3,
                "devices_drifted": 3 if share > 0.5 else 0,
                "snapshot_id": "snap-17",
                "snapshot_url": SNAPSHOT,
            },
        )
        admin.report_cohort_check("north", {"drifted": False, "drift_share": 0.05})


def refused_without_session(browser, server, rollout: int):
    """Without a session an action is refused and a page asks for the login; a
    wrong token is refused. Returns the login page."""
    from playwright.sync_api import expect

    stranger = browser.new_context(base_url=server.url, viewport=LAPTOP)
    refused = stranger.request.post(
        f"/ui/rollouts/{rollout}/abort", form={"csrf": "guess"}
    )
    assert refused.status == 403, refused.text()
    assert "no console session" in refused.text()
    page = stranger.new_page()
    page.goto(f"/ui/rollouts/{rollout}")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not the fleet's admin token")
    page.screenshot(path=str(SCREENSHOTS / "console-login.png"))
    return page


def watch_and_steer(page, admin, rollout: int) -> None:
    """The rollout's stages advance on the page without a reload (htmx swaps
    them in); pause and resume it there; each stage shows its evidence."""
    from playwright.sync_api import expect

    state = page.locator("#rollout-state")
    expect(page.locator("#stages tr[data-stage]")).to_have_count(4)
    wave_1 = page.locator("tr[data-stage='wave-1']")
    expect(wave_1).to_have_attribute("data-status", "current", timeout=60_000)
    page.get_by_role("button", name="Pause").click()
    expect(state).to_have_text("paused")
    assert admin.rollout(rollout)["state"] == "paused"
    page.screenshot(path=str(SCREENSHOTS / "console-rollout.png"), full_page=True)
    page.get_by_role("button", name="Resume").click()
    expect(state).to_have_text("running")
    expect(state).to_have_text("completed", timeout=90_000)
    expect(page.locator("#stages tr[data-status='passed']")).to_have_count(4)
    # The canary, judged against v1 on the same devices, with its numbers.
    expect(page.locator("#stages tbody").first).to_contain_text("confidence_drop")
    events = [e["event"] for e in admin.rollout(rollout)["events"]]
    assert "paused" in events and "resumed" in events, events


def drifted_cohort_to_ledger(page) -> None:
    """Cohorts -> the drifted one's devices -> one device -> why it runs v2."""
    from playwright.sync_api import expect

    page.get_by_role("link", name="Cohorts").click()
    south = page.locator("tr[data-cohort='south']")
    expect(south).to_have_attribute("data-drift", "drifted")
    snapshot = south.get_by_role("link", name="Evidently snapshot")
    expect(snapshot).to_have_attribute("href", SNAPSHOT)
    north = page.locator("tr[data-cohort='north']")
    expect(north).to_have_attribute("data-drift", "ok")
    page.screenshot(path=str(SCREENSHOTS / "console-cohorts.png"), full_page=True)
    south.get_by_role("link", name="devices").click()
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("south")
    page.screenshot(path=str(SCREENSHOTS / "console-devices.png"), full_page=True)
    rows.first.get_by_role("link").first.click()
    ledger = page.locator("#ledger")
    expect(ledger).to_contain_text("ran v2")
    expect(ledger).to_contain_text("started by drift on south (share 0.62")
    expect(ledger).to_contain_text(
        "prepared 0123456789abcdef0123456789abcdef.dir (DVC)"
    )
    page.screenshot(path=str(SCREENSHOTS / "console-device.png"), full_page=True)


def versions_and_enrollment(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("link", name="Versions").click()
    expect(page.locator("#versions")).to_contain_text("drift (south, share 0.62)")
    page.screenshot(path=str(SCREENSHOTS / "console-versions.png"), full_page=True)
    page.get_by_role("link", name="Enrollment").click()
    page.fill("#devices", "5")
    page.get_by_role("button", name="Issue").click()
    assert len(page.locator("#issued-code").inner_text()) >= 24
    expect(page.locator("#codes tbody tr").first).to_contain_text("0 of 5")
    page.screenshot(path=str(SCREENSHOTS / "console-enrollment.png"), full_page=True)


def on_a_phone(browser, page, server, rollout: int) -> None:
    from playwright.sync_api import expect

    phone = browser.new_context(viewport=PHONE, base_url=server.url)
    phone.add_cookies(page.context.cookies())
    small = phone.new_page()
    small.goto(f"/ui/rollouts/{rollout}")
    expect(small.locator("#rollout-state")).to_have_text("completed")
    small.screenshot(
        path=str(SCREENSHOTS / "console-rollout-phone.png"), full_page=True
    )


def test_an_operator_watches_and_steers_a_rollout_and_explains_a_device(
    models, digits, http, tmp_path
):
    from playwright.sync_api import expect

    # Each stage bakes 4 s: longer than the page's 2 s refresh, so each is seen.
    server = make_fleet_server(tmp_path, bake_s=4.0, waves=[34, 67])
    with running(server), chromium() as browser:
        admin = server.admin
        agents = make_agents(server, digits, http, 9, home=tmp_path / "devices")
        for agent in agents:
            agent.step()
        server.upload("1", models["good-1"], lineage=FIRST)
        admin.retarget("1", "first release")  # stable at once: no rollout to wait
        drive(agents, lambda: all(a.version == "1" for a in agents))
        for agent in agents:  # v1's telemetry: what v2's stages are judged against
            agent.step()
        report_drift(admin)
        server.upload("2", models["good-2"], lineage=DRIFTED_SOUTH)
        rollout = admin.start_rollout("2", "champion changed")["rollout"]["id"]
        page = refused_without_session(browser, server, rollout)

        stop = threading.Event()
        stepping(agents, stop)
        try:
            page.fill("#token", ADMIN)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{server.url}/ui/rollouts/{rollout}")
            watch_and_steer(page, admin, rollout)
            drifted_cohort_to_ledger(page)
            versions_and_enrollment(page)
            on_a_phone(browser, page, server, rollout)
        finally:
            stop.set()
