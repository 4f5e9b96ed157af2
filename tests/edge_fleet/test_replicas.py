"""The fleet's production shape on loopback, with real processes: PostgreSQL, two
fleet server replicas on it (`--static-tuf`), nginx in front (the TUF files as
static files, the API balanced over the replicas) and device agents as processes
talking to nginx only. One replica leads the rollout controller; killed with
SIGKILL in the middle of a stage, the other takes over and the rollout completes
with every device on the new version, no stage judged twice, and the timestamp
metadata's version never going back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import uuid4

import httpx
import numpy as np
import pytest

from edge_fleet.client import FleetAdmin
from edge_fleet.production.nginx import Nginx, nginx_binary
from stack.net import free_port
from tests.conftest import system_package_missing
from tests.edge_fleet.conftest import (
    ADMIN,
    FleetServer,
    agent_settings,
    make_fleet_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

DEVICES = 6


@pytest.fixture
def nginx_path() -> str:
    try:
        return nginx_binary()
    except FileNotFoundError as missing:
        system_package_missing(str(missing), "EDGELOOP_REQUIRE_POSTGRES")


def _replica(first: FleetServer, name: str) -> FleetServer:
    """Another replica of `first`: its own port, the same state folder, params
    and database."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    replica = FleetServer(
        url,
        port,
        first.state_dir,
        first.params_file,
        first.cfg,
        FleetAdmin(url, ADMIN),
        first.database_url,
        args=first.args,
    )
    replica.log = first.state_dir.parent / f"{name}.log"
    return replica


def _role(server: FleetServer) -> str | None:
    try:
        return httpx.get(f"{server.url}/health", timeout=2).json()["role"]
    except httpx.HTTPError:
        return None


def _until(condition, max_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < max_s, f"{what}: not within {max_s} s"
        time.sleep(0.2)
    return time.monotonic() - start


class TimestampWatch:
    """Reads timestamp.json through nginx, as a device does, every 0.2 s: the
    versions seen, in order."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = f"{url}/tuf/metadata/timestamp.json", token
        self.seen: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.wait(0.2):
                try:
                    answer = client.get(
                        self.url, headers={"Authorization": f"Bearer {self.token}"}
                    )
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    self.seen.append(answer.json()["signed"]["version"])


@dataclass
class Shape:
    replicas: list[FleetServer]
    nginx: Nginx
    admin: FleetAdmin  # through nginx


@pytest.fixture
def shape(postgres, nginx_path, tmp_path) -> Iterator[Shape]:
    """Two replicas on one PostgreSQL database, nginx in front, all started."""
    database = postgres.url(postgres.create_database(f"fleet_{uuid4().hex[:12]}"))
    first = make_fleet_server(
        tmp_path,
        database,
        bake_s=4.0,  # a stage lasts long enough to kill its judge in the middle
        poll_s=0.5,
        canary_percent=34,
        waves=[67],
    )
    first.args = ("--static-tuf",)
    first.log = tmp_path / "replica-a.log"
    replicas = [first, _replica(first, "replica-b")]
    nginx = Nginx(
        tmp_path / "nginx",
        f"127.0.0.1:{free_port()}",
        [f"127.0.0.1:{r.port}" for r in replicas],
        first.state_dir,
    )
    try:
        for replica in replicas:
            replica.start()
        nginx.start()
        first.admin = FleetAdmin(nginx.url, ADMIN)  # uploads and codes: nginx too
        yield Shape(replicas, nginx, first.admin)
    finally:
        nginx.stop()
        for replica in replicas:
            replica.kill()


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for agent in started:
        agent.terminate()
    for agent in started:
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()


def test_two_replicas_behind_nginx_survive_the_leader_s_death(
    shape, agents, models, digits, tmp_path
):
    first, admin, nginx = shape.replicas[0], shape.admin, shape.nginx
    roles = [_role(r) for r in shape.replicas]
    assert sorted(roles) == ["leader", "replica"], roles
    # The replicas serve no TUF file; nginx does, to a device's token only.
    assert httpx.get(f"{first.url}/tuf/metadata/timestamp.json").status_code == 404
    assert httpx.get(f"{nginx.url}/tuf/metadata/timestamp.json").status_code == 401

    # v1 stable; the devices (processes, through nginx only) enroll and run it.
    first.upload("1", models["good-1"])
    first.upload("2", models["good-2"])
    admin.retarget("1", "start")
    homes = start_devices(first, nginx, digits, tmp_path, agents)

    def versions() -> set[str | None]:
        return {d["current_version"] for d in admin.devices()}

    _until(lambda: versions() == {"1"}, 90, "every device on v1")
    token = json.loads((homes[0] / "state.json").read_text())["token"]
    served_as_a_cdn(nginx, token)
    watch = TimestampWatch(nginx.url, token)
    watch.thread.start()
    try:
        # v2's rollout; at wave-1, its judge (the leader) is killed.
        admin.start_rollout("2", "test")
        # An operator's console session, made through nginx on whichever replica.
        console = httpx.Client(base_url=nginx.url, timeout=30)
        login = console.post(
            "/ui/login", data={"token": ADMIN}, headers={"Origin": nginx.url}
        )
        assert login.status_code == 303, login.text
        _until(
            lambda: admin.rollouts()[0]["stage_name"] == "wave-1", 90, "wave-1 started"
        )
        leader = next(r for r in shape.replicas if _role(r) == "leader")
        survivor = next(r for r in shape.replicas if r is not leader)
        leader.kill(signal.SIGKILL)
        took_over = _until(
            lambda: _role(survivor) == "leader", 30, "the other replica leads"
        )
        _until(lambda: admin.rollouts()[0]["state"] != "running", 120, "rollout ended")
        _until(lambda: versions() == {"2"}, 60, "every device on v2")
    finally:
        watch.stop.set()
        watch.thread.join(timeout=10)
    rollout = admin.rollouts()[0]
    # The session outlives the replica that made it (its key is the fleet's).
    page = console.get(f"/ui/rollouts/{rollout['id']}")
    assert page.status_code == 200 and "completed" in page.text, page.text[:300]
    assert rollout["state"] == "completed", rollout
    passed = [e["stage"] for e in rollout["events"] if e["event"] == "stage_passed"]
    assert passed == ["canary", "wave-1", "full"], rollout["events"]
    assert took_over < 30
    assert watch.seen and watch.seen == sorted(watch.seen), watch.seen
    assert {d["health"] for d in admin.devices()} == {"ok"}, admin.devices()


def start_devices(
    first: FleetServer, nginx: Nginx, digits, tmp_path, agents: list
) -> list:
    """`DEVICES` agents as processes, enrolled through nginx (appended to
    `agents` as they start); their homes."""
    samples = tmp_path / "samples.npy"
    np.save(samples, digits.x[:200])
    code = first.enroll_code(devices=DEVICES)
    homes = []
    for i in range(DEVICES):
        home = tmp_path / f"dev-{i}"
        settings = agent_settings(
            first,
            home,
            samples,
            device_id=f"dev-{i}",
            url=nginx.url,
            profile="gateway",
            cohort=first.cfg.cohorts[i % len(first.cfg.cohorts)],
        )
        command = [sys.executable, "-m", "edge_fleet.device", "--config", str(settings)]
        enrolled = subprocess.run(
            [*command, "enroll", "--code", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
        homes.append(home)
        log = (tmp_path / f"dev-{i}.log").open("ab")
        agents.append(
            subprocess.Popen([*command, "run"], stdout=log, stderr=subprocess.STDOUT)
        )
    return homes


def served_as_a_cdn(nginx: Nginx, token: str) -> None:
    """A version's metadata is cached for good; timestamp.json asked every time."""
    auth = {"Authorization": f"Bearer {token}"}
    cached = httpx.get(f"{nginx.url}/tuf/metadata/1.root.json", headers=auth)
    assert cached.status_code == 200
    assert "immutable" in cached.headers["cache-control"]
    fresh = httpx.get(f"{nginx.url}/tuf/metadata/timestamp.json", headers=auth)
    assert fresh.status_code == 200
    assert fresh.headers["cache-control"] == "no-cache"
