"""A device that cannot be bricked or frozen, against the real fleet server: the smoke
test runs the batch sizes the device uses; a failing sensor or model is reported,
never fatal; a link that repeats an old hint does not freeze it, and one that cuts
it off from metadata makes it report `stale_metadata`; and a device agent process
killed with SIGKILL at each step of an install restarts answering with a working
model."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from components.errors import ServiceError
from stack.gate_seal import file_sha256
from stack.net import free_port
from tests.edge_fleet.conftest import (
    agent_settings,
    device_on_v1_of,
    drive,
    keras_int8_files,
    linear_onnx,
    make_fleet_server,
    running,
)

pytestmark = pytest.mark.integration


def _server_view(server) -> dict:
    [state] = server.admin.devices()
    return state


def test_a_model_that_takes_one_fixed_batch_fails_its_smoke_test(
    fleet_server, device_on_v1, tmp_path
):
    """Exported with a batch of 8 fixed: it answers 8 rows (the old smoke test) and
    fails on one row (every latency measurement, every single reading). The fleet
    server now loads an upload as a device would and refuses it first; the
    device's own smoke test still refuses the file should one reach it."""
    device = device_on_v1
    weights = np.random.default_rng(0).normal(size=(64, 10))
    fixed = linear_onnx(tmp_path / "fixed-8.onnx", weights, np.zeros(10), batch=8)
    with pytest.raises(ServiceError, match=r"422 .*profile gateway.*Expected: 8"):
        fleet_server.upload("3", fixed)
    problem = device._smoke_test(fixed, file_sha256(fixed))
    assert problem is not None and "smoke test, batch of 1" in problem, problem
    assert device.version == "1"


class FailingSensor:
    """Inputs that stop: the smoke test's recorded rows remain, readings fail."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def batch(self, n: int) -> np.ndarray:
        raise OSError("sensor /dev/i2c-1 not answering")


def test_a_failing_sensor_is_reported_not_fatal(fleet_server, device_on_v1, digits):
    device = device_on_v1
    device.stream = FailingSensor(digits.x[:8])
    device.step()  # before: the exception left step() and crash-looped the agent
    state = _server_view(fleet_server)
    assert state["current_version"] == "1" and state["health"] == "failed"
    assert "telemetry failed: OSError: sensor /dev/i2c-1" in state["last_error"]
    fleet_server.admin.retarget("2", "still takes updates")
    drive([device], lambda: device.version == "2")


class HeldLink(httpx.BaseTransport):
    """The link between device and server held by someone who repeats the hint the
    device saw last (`timestamp_version` in the check-in answer) and, with
    `block_metadata`, answers every TUF metadata request with 503."""

    def __init__(self, hint: int, *, block_metadata: bool) -> None:
        self.hint, self.block = hint, block_metadata
        self.server = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.block and "/tuf/metadata/" in request.url.path:
            return httpx.Response(503, content=b"held")
        reply = self.server.handle_request(request)
        if not request.url.path.endswith("/checkin") or reply.status_code != 200:
            return reply
        reply.read()
        answer = json.loads(reply.content) | {"timestamp_version": self.hint}
        return httpx.Response(200, json=answer)


@pytest.fixture
def quick_refresh(tmp_path) -> Iterator:
    with running(make_fleet_server(tmp_path, max_metadata_age_s=1.0)) as server:
        yield server


def test_a_repeated_old_hint_does_not_freeze_the_device(
    quick_refresh, models, digits, http, tmp_path
):
    device = device_on_v1_of(quick_refresh, models, digits, http, tmp_path / "device")
    with httpx.Client(
        transport=HeldLink(device.known_timestamp, block_metadata=False), timeout=30
    ) as held:
        device.http = held
        quick_refresh.admin.retarget("2", "behind a held hint")
        drive([device], lambda: device.version == "2", max_s=20, pause_s=0.3)
    assert device.error is None


def test_a_device_cut_off_from_metadata_reports_stale_then_recovers(
    quick_refresh, models, digits, http, tmp_path
):
    device = device_on_v1_of(quick_refresh, models, digits, http, tmp_path / "device")
    with httpx.Client(
        transport=HeldLink(device.known_timestamp, block_metadata=True), timeout=30
    ) as held:
        device.http = held
        quick_refresh.admin.retarget("2", "while the link is held")
        device.verified_at -= 2  # verified longer ago than max_metadata_age_s
        device.step()  # refreshes (too old), fails: 503
        device.step()  # reports it
        state = _server_view(quick_refresh)
        assert state["health"] == "stale_metadata", state
        assert "503" in state["last_error"], state
        assert device.version == "1"
    device.http = http
    drive([device], lambda: device.version == "2", max_s=20)
    device.step()
    assert _server_view(quick_refresh)["health"] == "ok"


# -- SIGKILL at each step of an install, real agent processes -----------------------


class ThrottledProxy:
    """A TCP relay on loopback that passes the server's answers at `rate` bytes/s
    (a slow cellular link), so a download takes seconds and can be killed midway."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port, self.rate = target_port, rate
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, reader, writer, *, throttle: bool) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
                if throttle:
                    await asyncio.sleep(len(data) / self.rate)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        await asyncio.gather(
            self._pipe(reader, up_writer, throttle=False),
            self._pipe(up_reader, writer, throttle=True),
        )

    def __enter__(self) -> ThrottledProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port), self.loop
        ).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _agent(command: Path, server, home: Path, samples: Path, url: str, *, steps=0):
    """The agent installed from its wheel, as its own process."""
    settings = agent_settings(server, home, samples, device_id="dev-killed", url=url)
    if not (home / "state.json").exists():
        code = server.enroll_code(device_id="dev-killed")
        enrolled = subprocess.run(
            [str(command), "--config", str(settings), "enroll", "--code", code],
            capture_output=True,
            text=True,
            check=False,
        )
        assert enrolled.returncode == 0, enrolled.stderr
    return subprocess.Popen(
        [str(command), "--config", str(settings), "run", "--steps", str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc: subprocess.Popen, needle: str, max_s: float = 60) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + max_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if needle in line:
            return seen
    proc.kill()
    raise AssertionError(f"{needle!r} not seen: {seen[-20:]}")


def _big_model(path: Path, digits, scale: float) -> Path:
    """The good-1 fit as a linear model with 3 MB of extra (unused) hidden units,
    so that a throttled download takes seconds."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=scale, max_iter=300).fit(digits.x, digits.y)
    pad = np.zeros((64, 12_000 - 10))
    weights = np.concatenate([fit.coef_.T, pad], axis=1)
    bias = np.concatenate([fit.intercept_, np.full(12_000 - 10, -1e4)])
    return linear_onnx(path, weights, bias)


@pytest.fixture(scope="module")
def big_keras_int8(digits, tmp_path_factory) -> dict[str, Path]:
    """Keras int8 files of 3 MB, so that a throttled download takes seconds."""
    root = tmp_path_factory.mktemp("big-keras-int8")
    return keras_int8_files(digits, root, hidden=40_000, epochs=2)


@pytest.mark.parametrize(
    ("runtime", "step"),
    [
        ("onnx", "downloading"),
        ("onnx", "downloaded and verified"),
        ("onnx", "smoke test passed"),
        ("onnx", "switched"),
        ("litert", "downloading"),
        ("litert", "smoke test passed"),
    ],
)
def test_sigkill_at_each_install_step_leaves_a_working_device(  # noqa: PLR0917
    fleet_server, digits, tmp_path, runtime, step, agent_venvs, request
):
    """The agent installed from its wheel (ONNX Runtime, or LiteRT with a Keras
    champion's int8 files), killed at a step of installing v2."""
    agent_command = agent_venvs(runtime)
    samples = tmp_path / "samples.npy"
    np.save(samples, digits.x[:200])
    home = tmp_path / "device"
    if runtime == "onnx":
        v1 = _big_model(tmp_path / "v1.onnx", digits, 1.0)
        v2 = _big_model(tmp_path / "v2.onnx", digits, 0.5)
    else:
        files = request.getfixturevalue("big_keras_int8")
        v1, v2 = files["good-1"], files["good-2"]
    for version, model in (("1", v1), ("2", v2)):
        fleet_server.upload(version, model, profiles=["cloud"])
    fleet_server.admin.retarget("1", "test")
    first = _agent(agent_command, fleet_server, home, samples, fleet_server.url)
    _read_until(first, "v1: switched")
    first.kill()
    first.wait(timeout=30)

    with ThrottledProxy(fleet_server.port, rate=2_000_000) as proxy:
        fleet_server.admin.retarget("2", "test")
        installing = _agent(
            agent_command,
            fleet_server,
            home,
            samples,
            f"http://127.0.0.1:{proxy.port}",
        )
        _read_until(installing, f"v2: {step}")
        installing.send_signal(signal.SIGKILL)
        installing.wait(timeout=30)

    # Restarted: it answers with the model its state names (its first report), and
    # then finishes the install that was cut short.
    restarted = _agent(
        agent_command, fleet_server, home, samples, fleet_server.url, steps=4
    )
    out, _ = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, out
    assert "Traceback" not in out, out
    state = fleet_server.admin.devices()[0]
    assert state["current_version"] == "2" and state["health"] == "ok", (state, out)
    reports = fleet_server.admin.telemetry()
    assert {r["version"] for r in reports} <= {"1", "2"}
    assert reports[0]["version"] == "2"


def test_the_local_status_is_unhealthy_when_check_ins_stop_being_taken(device_on_v1):
    """The fleet cannot see a device whose check-ins fail: its own /status says so
    (main said 'ok' with the last good check-in long past)."""
    from edge_fleet.device.local import overdue_after_s, status

    device = device_on_v1
    assert status(device)["health"] == "ok"
    device.checked_in_at = time.monotonic() - overdue_after_s(device.cfg) - 1
    late = status(device)
    assert late["health"] == "checkin_overdue", late
    assert late["last_checkin_s_ago"] > overdue_after_s(device.cfg)
    device.step()
    assert status(device)["health"] == "ok"
