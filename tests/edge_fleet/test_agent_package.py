"""`edgeloop-agent` as an operator installs it: the wheel built from the repository,
in a fresh venv with only it and ONNX Runtime, run as its own process. It enrolls
with a one-time code, installs the fleet's version through TUF, answers the device
application's rows on its loopback port while a rollout and a rollback switch its
model under it, and says where it stands (`status`). Killed with SIGKILL at each step
of an install: tests/edge_fleet/test_device.py, with the same installed agent."""

from __future__ import annotations

import subprocess
import threading
import time
from importlib.metadata import Distribution
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_fleet.device import audio
from tests.edge_fleet.conftest import (
    agent_settings,
    drive,
    keras_int8_files,
    make_agents,
    rollout_over,
)
from tests.oversized import MB, send_oversized, tree_rss

pytestmark = pytest.mark.integration

STACK_ONLY = {
    "edgeloop", "torch", "tensorflow", "tensorflow-cpu", "keras", "pandas", "prefect",
    "mlflow", "bentoml", "pydantic", "sqlalchemy", "pyyaml", "scikit-learn", "onnx",
}  # fmt: skip


def test_the_installed_agent_holds_only_what_a_device_needs(agent_command, tmp_path):
    site = next((agent_command.parent.parent / "lib").glob("python*/site-packages"))
    names = {
        Distribution.at(d).metadata["Name"].lower() for d in site.glob("*.dist-info")
    }
    assert {"edgeloop-agent", "onnxruntime", "tuf", "httpx", "numpy"} <= names
    assert not names & STACK_ONLY, sorted(names & STACK_ONLY)
    # A bad setting stops it with one line naming it, no traceback.
    done = subprocess.run(
        [str(agent_command), "--config", str(tmp_path / "absent.toml"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"edgeloop-agent: --config {tmp_path / 'absent.toml'}: no such file"
    ]


class Application:
    """The device's own application: one row at a time to the agent's loopback
    port, every 20 ms, keeping each answer's version (and any failure)."""

    def __init__(self, port: int, rows: np.ndarray) -> None:
        self.url = f"http://127.0.0.1:{port}/predict"
        self.rows, self.versions, self.failures = rows, [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self.stop.wait(0.02):
                row = self.rows[i % len(self.rows)].tolist()
                i += 1
                try:
                    reply = client.post(self.url, json={"row": row})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if reply.status_code == 200:
                    self.versions.append(reply.json()["version"])
                elif reply.status_code != 503:  # 503: no model installed yet
                    self.failures.append(f"{reply.status_code} {reply.text}")


def _cli(command: Path, settings: Path, *args: str) -> dict:
    import json

    done = subprocess.run(
        [str(command), "--config", str(settings), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _until(condition, max_s: float = 60) -> None:
    deadline = time.monotonic() + max_s
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def keras_int8(digits, tmp_path_factory) -> dict[str, Path]:
    return keras_int8_files(digits, tmp_path_factory.mktemp("keras-int8"))


@pytest.fixture(params=["onnx", "litert"])
def runtime(request, models) -> tuple[str, dict[str, Path]]:
    """The agent's runtime extra and the files its fleet ships: the linear ONNX
    classifiers, or a Keras champion's int8 TFLite files."""
    if request.param == "onnx":
        return "onnx", models
    return "litert", request.getfixturevalue("keras_int8")


@pytest.fixture
def enrolled(
    agent_venvs, runtime, fleet_server, digits, tmp_path
) -> tuple[Path, Path, int]:
    """An installed agent (its command, settings and local port), enrolled with a
    one-time code, not yet running: `status` reads its home."""
    agent_command = agent_venvs(runtime[0])
    samples = tmp_path / "samples.npy"
    np.save(samples, digits.x[:100])
    settings = agent_settings(
        fleet_server, tmp_path / "gw", samples, device_id="gw-wheel", profile="gateway"
    )
    port = int(settings.read_text().split("inference_port = ")[1].split()[0])
    code = fleet_server.enroll_code(device_id="gw-wheel")
    assert _cli(agent_command, settings, "enroll", "--code", code)["enrolled"]
    offline = _cli(agent_command, settings, "status")
    assert offline["running"] is False and offline["enrolled"] is True
    assert offline["version"] is None
    return agent_command, settings, port


def local_bodies_are_bounded(port: int, pid: int) -> None:
    """A row of the wrong width is refused; a body declared too large, declared
    negative (main buffered 200 MB: RSS 101 -> 307 MB) or chunked: refused
    unread."""
    url = f"http://127.0.0.1:{port}/predict"
    refused = httpx.post(url, json={"row": [1.0, 2.0]})
    assert refused.status_code == 400
    assert "expected a list of 64 numbers, got 2" in refused.json()["error"]
    # A clip for a model of table rows: refused as serving's /listen refuses it.
    clip = audio.write_wav(np.zeros(audio.CLIP_SAMPLES, dtype=np.float32))
    heard = httpx.post(url.replace("/predict", "/listen"), content=clip)
    assert heard.status_code == 400
    assert (
        "takes rows of 64 features, not audio clips: use /predict"
        in (heard.json()["error"])
    )
    for how, expected in (
        ({}, 413),
        ({"declared": "-1"}, 400),
        ({"chunked": True}, 411),
    ):
        before = tree_rss(pid)
        refusal = send_oversized(url, **how)
        assert refusal.status == expected and refusal.sent < 200 * MB, (how, refusal)
        assert tree_rss(pid) - before < 10 * MB, how


def one_bad_row_does_not_stop_telemetry(port: int, server, digits) -> None:
    """Rows of 1e20 (in float32's range, their square not) among normal ones:
    main's reports then overflowed to inf and every check-in carrying them failed
    ('Out of range float values are not JSON compliant'); now the report that
    holds them is taken."""
    huge = [1e20] * 64
    with httpx.Client(timeout=10) as client:
        for row in (huge, digits.x[0].tolist(), huge):
            answer = client.post(f"http://127.0.0.1:{port}/predict", json={"row": row})
            assert answer.status_code == 200, answer.text
    _until(
        lambda: any(
            max(t["feature_stats"]["max"]) >= 1e20
            for t in server.admin.telemetry(limit=50)
            if t["device_id"] == "gw-wheel"
        )
    )


def test_installed_agent_enrolls_installs_answers_and_follows_rollout_and_rollback(
    enrolled, runtime, fleet_server, digits, tmp_path
):
    agent_command, settings, port = enrolled
    models = runtime[1]
    status_url = f"http://127.0.0.1:{port}/status"
    http = httpx.Client(timeout=30)
    others = make_agents(fleet_server, digits, http, 3, home=tmp_path / "devices")
    agent = subprocess.Popen(
        [str(agent_command), "--config", str(settings), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    app = Application(port, digits.x[100:300])
    try:
        for other in others:
            other.step()
        _until(lambda: _answers(status_url))  # the agent's port is open
        app.thread.start()

        def running(version: str):
            return lambda: httpx.get(status_url, timeout=5).json()["version"] == version

        for version in ("1", "2"):
            fleet_server.upload(version, models[f"good-{version}"])
            fleet_server.admin.start_rollout(version, "test")
            drive(others, rollout_over(fleet_server))
            assert fleet_server.admin.rollouts()[0]["state"] == "completed"
            _until(running(version))
            _until(lambda v=version: app.versions[-5:] == [v] * 5)

        # Correct answers: the rows' classes as the fitted model gives them.
        with httpx.Client(timeout=10) as client:
            answers = [
                client.post(
                    f"http://127.0.0.1:{port}/predict", json={"row": row.tolist()}
                ).json()
                for row in digits.x[300:350]
            ]
        classes = np.array([int(a["class"]) for a in answers])
        assert (classes == digits.y[300:350]).mean() >= 0.9
        assert 0.0 < min(a["confidence"] for a in answers) <= 1.0
        local_bodies_are_bounded(port, agent.pid)
        one_bad_row_does_not_stop_telemetry(port, fleet_server, digits)

        # The operator's rollback: v1 again, from the agent's other slot.
        fleet_server.admin.retarget("1", "rollback")
        _until(running("1"))
        _until(lambda: app.versions[-5:] == ["1"] * 5)
        status = _cli(agent_command, settings, "status")
        assert status["running"] is True and status["version"] == "1"
        assert {s["version"] for s in status["slots"].values()} == {"1", "2"}
        assert status["health"] == "ok" and status["last_checkin_s_ago"] < 10
    finally:
        app.stop.set()
        app.thread.join(timeout=10)
        agent.terminate()
        out, _ = agent.communicate(timeout=30)
        http.close()

    assert not app.failures, app.failures[:5]  # no row failed across the switches
    seen = [v for i, v in enumerate(app.versions) if i == 0 or v != app.versions[i - 1]]
    assert seen == ["1", "2", "1"], seen  # never an older version after a newer one
    assert "Traceback" not in out, out
    assert "v2: switched to slot" in out and "local inference on" in out
    [device] = [d for d in fleet_server.admin.devices() if d["id"] == "gw-wheel"]
    assert device["current_version"] == "1" and device["health"] == "ok"
    reports = [
        r
        for r in fleet_server.admin.telemetry(limit=500)
        if r["device_id"] == "gw-wheel"
    ]
    assert reports, "the installed agent reported no telemetry"
