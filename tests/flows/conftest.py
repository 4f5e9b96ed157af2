"""Real services on free loopback ports: an MLflow server (SQLite) and Prefect's
test harness (a temporary Prefect server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.settings import Settings
from flows.services import free_port, mlflow_spec, start_service, stop_pid


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("edgeloop-state"), mlflow_port=free_port()
    )
    state = start_service(mlflow_spec(settings), settings)
    yield settings.tracking_uri
    assert state.pid is not None
    stop_pid(state.pid)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    # Offline: no telemetry heartbeat (it also contends for the harness' SQLite).
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    return tmp_path / "project"
