"""The `edgeloop` command as a user runs it: one-line errors, validate, and the
local services brought up, shown and stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from components.errors import GateRefused
from stack.mlflow_auth import CREDENTIALS, as_user
from stack.net import free_port, is_healthy
from stack.secrets import SECRET_ENV
from stack.settings import get_settings
from stack.supervisor import Supervisor
from tests.conftest import BIN, REPO
from tests.postgres import PostgresCluster
from tests.waits import poll


def edgeloop(
    *args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "edgeloop"), *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=timeout,
    )


@pytest.fixture
def digits_csv(tmp_path: Path) -> Path:
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    path = tmp_path / "batch.csv"
    frame.to_csv(path, index=False)
    return path


def test_validate_accepts_a_good_file(digits_csv: Path, tmp_path: Path):
    out = edgeloop("validate", str(digits_csv), "--no-quarantine")
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout and "all 200 expectations met" in out.stdout


def test_validate_rejects_a_bad_file_in_one_line(digits_csv: Path, tmp_path: Path):
    text = digits_csv.read_text().splitlines()
    cells = text[5].split(",")
    cells[10] = ""  # a null pixel
    text[5] = ",".join(cells)
    digits_csv.write_text("\n".join(text) + "\n")
    out = edgeloop("validate", str(digits_csv), "--no-quarantine")
    assert out.returncode == 1
    assert "expect_column_values_to_not_be_null(pixel_1_2)" in out.stdout
    assert "does not meet the data contract" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_refused_version_ends_the_run_non_zero_with_the_key():
    """`edgeloop run` exited 0 on a version the gates refused."""
    from cli.pipeline import refused
    from components.config import GatesConfig
    from components.evaluation.gates import Candidate, decide

    low = Candidate("2", 0.6727, 1024.0, 0.1, True)
    refused("m", "2", decide(low, None, GatesConfig(min_test_accuracy=0.6)))
    with pytest.raises(GateRefused, match=r"m v2 was refused .*0\.6727 < 0\.95") as e:
        refused("m", "2", decide(low, None, GatesConfig()))
    assert "change registry.gates.min_test_accuracy in params.yaml" in str(e.value.hint)


def test_bad_params_is_one_line_with_the_key(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(
        (REPO / "params.yaml").read_text().replace("epochs: 40", "epochs: forty")
    )
    out = edgeloop("validate", "x.csv", "--params", str(tmp_path / "params.yaml"))
    assert out.returncode == 1
    assert "train.epochs" in out.stderr and "'forty'" in out.stderr
    assert "Traceback" not in out.stderr
    debug = edgeloop(
        "--debug", "validate", "x.csv", "--params", str(tmp_path / "params.yaml")
    )
    assert "Traceback" in debug.stderr


def test_run_without_services_says_how_to_start_them(tmp_path: Path):
    env = {
        "EDGELOOP_MLFLOW_PORT": str(free_port()),
        "EDGELOOP_STATE_DIR": str(tmp_path),
    }
    out = edgeloop("run", env=env)
    assert out.returncode == 1
    assert "is not answering" in out.stderr and "edgeloop up" in out.stderr


def postgres_env(cluster: PostgresCluster) -> dict[str, str]:
    """The one setting per server that moves it to PostgreSQL (a new database each)."""
    suffix = uuid4().hex[:8]
    return {
        "EDGELOOP_MLFLOW_BACKEND_STORE_URI": cluster.url(
            cluster.create_database(f"mlflow_{suffix}")
        ),
        "EDGELOOP_PREFECT_DATABASE_URL": cluster.url(
            cluster.create_database(f"prefect_{suffix}"), driver="asyncpg"
        ),
        "EDGELOOP_FLEET_DATABASE_URL": cluster.url(
            cluster.create_database(f"fleet_{suffix}")
        ),
    }


def control_plane_is_authenticated(mlflow: str, prefect: str, made: dict) -> None:
    """MLflow and Prefect refuse a caller without credentials; the stack's service
    user and Prefect auth string (the secrets `up` made) are let in."""
    create = {"name": "intruder"}
    experiments = f"{mlflow}/api/2.0/mlflow/experiments/create"
    assert httpx.post(experiments, json=create).status_code == 401
    service = ("edgeloop", made["mlflow_service_password"])
    assert httpx.post(experiments, json=create, auth=service).status_code == 200
    flows = f"{prefect}/api/flows/filter"
    assert httpx.post(flows, json={}).status_code == 401
    user, password = made["prefect_auth_string"].split(":", 1)
    assert httpx.post(flows, json={}, auth=(user, password)).status_code == 200


@pytest.mark.slow
@pytest.mark.integration
def test_up_status_down(
    tmp_path: Path, postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
):
    """On PostgreSQL, one setting per server; `edgeloop up` on the SQLite default is
    what tests/flows/test_loop.py starts (a minute each: not run twice). A service
    that dies is started again by the process manager."""
    databases = postgres_env(postgres)
    env = databases | {
        "EDGELOOP_STATE_DIR": str(tmp_path / "state"),
        "EDGELOOP_MLFLOW_PORT": str(free_port()),
        "EDGELOOP_PREFECT_PORT": str(free_port()),
        "EDGELOOP_WEBHOOK_PORT": str(free_port()),
        "EDGELOOP_SERVING_PORT": str(free_port()),
        "EDGELOOP_FLEET_PORT": str(free_port()),
        "EDGELOOP_EVIDENTLY_PORT": str(free_port()),
        "EDGELOOP_WORKER_PORT": str(free_port()),
    }
    mlflow = f"http://127.0.0.1:{env['EDGELOOP_MLFLOW_PORT']}"
    prefect = f"http://127.0.0.1:{env['EDGELOOP_PREFECT_PORT']}"
    # `up` makes the stack's secrets itself: none given in the environment.
    for name in [*SECRET_ENV.values(), *CREDENTIALS]:
        monkeypatch.delenv(name, raising=False)
    try:
        up = edgeloop("up", env=env)
        assert up.returncode == 0, up.stderr
        assert "serving waits for a champion" in up.stdout  # a fresh registry
        assert is_healthy(f"{mlflow}/health") and is_healthy(f"{prefect}/api/health")
        secrets_file = tmp_path / "state" / "secrets.json"
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        made = json.loads(secrets_file.read_text())
        control_plane_is_authenticated(mlflow, prefect, made)
        again = edgeloop("up", env=env)
        assert again.returncode == 0
        status = edgeloop("status", env=env)
        assert status.stdout.count(" up ") == 6, status.stdout  # serving waits
        fleet = f"http://127.0.0.1:{env['EDGELOOP_FLEET_PORT']}"
        assert is_healthy(f"{fleet}/health")
        again = edgeloop("register", env=env)  # what a compose install runs once
        assert again.returncode == 0, again.stderr
        with as_user("admin", made["mlflow_admin_password"]):  # admin only
            hooks = MlflowClient(mlflow).list_webhooks()
        assert [h.url for h in hooks] == [
            f"http://127.0.0.1:{env['EDGELOOP_WEBHOOK_PORT']}/mlflow/webhook"
        ]
        # Each server keeps its state in its PostgreSQL database, none in SQLite.
        for setting, table in (
            ("EDGELOOP_MLFLOW_BACKEND_STORE_URI", "registered_models"),
            ("EDGELOOP_PREFECT_DATABASE_URL", "flow_run"),
            ("EDGELOOP_FLEET_DATABASE_URL", "devices"),
        ):
            database = databases[setting].rsplit("/", 1)[1]
            assert table in postgres.tables(database), setting
        state = tmp_path / "state"
        assert not list(state.rglob("*.db")), list(state.rglob("*.db"))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        supervisor = Supervisor(get_settings())
        killed = supervisor.state("fleet").pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        restarted = poll(
            lambda: supervisor.state("fleet"),
            lambda s: s.pid not in (None, killed) and s.healthy,
            max_s=60,
        )
        assert (
            restarted.healthy
            and f"{restarted.pid}" in edgeloop("status", env=env).stdout
        )
        busy = edgeloop("up", env=env | {"EDGELOOP_STATE_DIR": str(tmp_path / "other")})
        assert busy.returncode == 1 and "already in use" in busy.stderr
    finally:
        down = edgeloop("down", env=env)
    assert all(
        name in down.stdout
        for name in ("mlflow", "prefect", "webhook", "fleet", "evidently", "worker")
    )
    assert not is_healthy(f"{mlflow}/health")
    assert not is_healthy(f"{prefect}/api/health")


FAILED_TASK = """
import logging, sys
from prefect import flow  # sets up Prefect's console logging, as a flow module does
from cli.console import DEBUG, one_line_logs
DEBUG["on"] = sys.argv[1] == "debug"
one_line_logs()
try:
    raise RuntimeError("the stage failed")
except RuntimeError:
    logging.getLogger("prefect.task_runs").error(
        "Task run failed with exception: RuntimeError - Retries are exhausted",
        exc_info=True,
        extra={"task_run_name": "run_stage-0"},  # what Prefect's run logger adds
    )
"""


@pytest.mark.parametrize("mode", ["plain", "debug"])
def test_prefect_logs_no_traceback_unless_debug(mode: str):
    """Prefect logs a failed task with its traceback; the CLI's console shows the
    line without it (the error follows in one line), with it under --debug."""
    out = subprocess.run(
        [str(BIN / "python"), "-c", FAILED_TASK, mode],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ | {"PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"},
        timeout=120,
    )
    assert "Task run failed with exception: RuntimeError" in out.stderr, out.stderr
    assert ("Traceback" in out.stderr) == (mode == "debug"), out.stderr
