"""Starting a rollout on the real fleet server is idempotent and atomic: a repeated
start is a no-op that says so, another version's active rollout is a conflict unless
the start supersedes it, and concurrent superseding starts leave exactly one active
rollout, the one the published rollout channel holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from components.errors import ServiceError
from edge_fleet.controller import ACTIVE
from tests.edge_fleet.conftest import FleetServer, make_fleet_server, running

pytestmark = pytest.mark.integration


@pytest.fixture
def baking_server(tmp_path) -> Iterator[FleetServer]:
    """A fleet server whose stages bake for an hour: a rollout stays active."""
    with running(make_fleet_server(tmp_path, bake_s=3600)) as server:
        yield server


def _until(read, done, max_s: float = 30):
    deadline = time.monotonic() + max_s
    value = read()
    while not done(value):
        assert time.monotonic() < deadline, f"not reached in {max_s} s: {value}"
        time.sleep(0.2)
        value = read()
    return value


def test_a_repeated_start_is_a_no_op_that_says_so(fleet_server, models):
    fleet_server.upload("1", models["good-1"])
    first = fleet_server.admin.start_rollout("1", "first")
    assert first["outcome"] == "started" and first["superseded"] is None
    again = fleet_server.admin.start_rollout("1", "again")
    assert again["outcome"] == "already_rolling_out", again
    assert again["rollout"]["id"] == first["rollout"]["id"]
    assert "already running" in again["detail"]
    # No devices: each stage passes once baked, and the rollout completes.
    _until(
        lambda: fleet_server.admin.rollout(first["rollout"]["id"])["state"],
        lambda state: state == "completed",
    )
    stable = fleet_server.admin.start_rollout("1", "once more")
    assert stable["outcome"] == "already_stable", stable
    assert "already the fleet's stable version" in stable["detail"]
    assert stable["rollout"]["id"] == first["rollout"]["id"]
    assert [r["id"] for r in fleet_server.admin.rollouts()] == [first["rollout"]["id"]]


def test_another_versions_rollout_is_a_conflict_unless_superseded(
    baking_server, models
):
    server = baking_server
    server.upload("1", models["good-1"])
    server.upload("2", models["good-2"])
    first = server.admin.start_rollout("1", "v1 is champion")["rollout"]
    with pytest.raises(ServiceError, match="rollout 1 of v1 is running"):
        server.admin.start_rollout("2", "without supersede")
    second = server.admin.start_rollout("2", "champion changed", supersede=True)
    assert second["outcome"] == "started"
    assert second["superseded"]["id"] == first["id"]
    old = server.admin.rollout(first["id"])
    assert old["state"] == "aborted"
    assert old["cause"]["check"] == "superseded"
    assert "superseded by v2 (champion changed)" in old["cause"]["detail"]
    summary = server.admin.summary()
    assert summary["active_rollout"]["version"] == "2"
    assert summary["channels"]["channel/rollout"]["version"] == "2"


def test_concurrent_superseding_starts_leave_exactly_one_active_rollout(
    baking_server, models
):
    server = baking_server
    versions = [str(v) for v in range(1, 7)]
    for version in versions:
        server.upload(version, models["good-1" if int(version) % 2 else "good-2"])
    gate = threading.Barrier(len(versions) * 2)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def start(version: str) -> None:
        gate.wait()
        try:
            answers.append(server.admin.start_rollout(version, "race", supersede=True))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(v,)) for v in versions + versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    rollouts = server.admin.rollouts()
    active = [r for r in rollouts if r["state"] in ACTIVE]
    assert len(active) == 1, rollouts
    started = [a for a in answers if a["outcome"] == "started"]
    assert len(started) == len(rollouts)  # each start made one rollout, no more
    assert {a["outcome"] for a in answers} <= {"started", "already_rolling_out"}
    for rollout in rollouts:
        if rollout["id"] != active[0]["id"]:
            assert rollout["state"] == "aborted", rollout
            assert rollout["cause"]["check"] == "superseded", rollout
    channel = server.admin.summary()["channels"]["channel/rollout"]
    assert channel["version"] == active[0]["version"]
    assert channel["rollout"] == active[0]["id"]
