"""Real services on free loopback ports: an MLflow server (SQLite) and Prefect's
test harness (a temporary Prefect server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.settings import Settings
from flows.services import free_port, mlflow_spec, start_service, stop_pid


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        state_dir=tmp_path_factory.mktemp("edgeloop-state"),
        mlflow_port=free_port(),
        webhook_port=free_port(),
    )


@pytest.fixture(scope="session")
def mlflow_uri(stack_settings: Settings) -> Iterator[str]:
    settings = stack_settings
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


def register_measured_version(client: MlflowClient, name: str, accuracy: float) -> str:
    """A run with the measurements the gates read, registered as a new version."""
    experiment = client.get_experiment_by_name("registry-tests")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("registry-tests")
    )
    run = client.create_run(experiment_id)
    for key, value in {
        "test_accuracy": accuracy,
        "variant.int8_static.size_bytes": 55_000.0,
        "variant.int8_static.latency_median_ms": 0.02,
    }.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already there
        pass
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run.info.run_id
    )
    for key, value in {
        "edgeloop.ship_variant": "int8_static",
        "edgeloop.ship_accepted": "true",
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    return str(version.version)
