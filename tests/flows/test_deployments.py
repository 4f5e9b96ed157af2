"""The stack's deployments and the drift automation, on Prefect's test server: a
drift event from the monitor starts a run of the training_pipeline deployment, with
the event in its parameters."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def test_a_drift_event_starts_the_training_deployment(
    prefect_harness, stack_settings, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from components.config import load_params
    from flows.deployments import register
    from stack.contracts import DRIFT_EVENT as EVENT
    from tests.conftest import REPO

    params = load_params(REPO / "params.yaml")
    ids = register(stack_settings, tmp_path, params)
    assert set(ids) == {"training_pipeline", "monitor", "edge_release"}
    with get_client(sync_client=True) as client:
        training = client.read_deployment(ids["training_pipeline"])
        monitor = client.read_deployment(ids["monitor"])
        assert training.work_pool_name == "edgeloop"
        assert [s.schedule.cron for s in training.schedules] == [
            params.monitoring.retrain_cron
        ]
        assert [s.schedule.cron for s in monitor.schedules] == [
            params.monitoring.schedule_cron
        ]
        assert training.parameters["project_dir"] == str(tmp_path.resolve())

    def drift_event() -> None:
        emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": "edgeloop.drift.cohort-south",
                "prefect.resource.name": "cohort-south",
            },
            payload={
                "target": "cohort-south",
                "drift_share": 0.66,
                "drifted_columns": ["mean_f3"],
                "snapshot_id": "snap-1",
            },
        )
        EventsWorker.drain_all()

    def event_runs() -> list:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[training.id])
                )
            )
        return [r for r in runs if not r.auto_scheduled]  # not the cron's

    # The server's trigger service loads a new automation on its own schedule: an
    # event that comes before it is not matched, so the event is sent again (every
    # 5 s) until a run of the deployment appears.
    deadline = time.monotonic() + 90
    runs: list = []
    while not runs and time.monotonic() < deadline:
        drift_event()
        sent = time.monotonic()
        while not runs and time.monotonic() < min(sent + 5, deadline):
            time.sleep(0.5)
            runs = event_runs()
    assert runs, "no run of training_pipeline/edgeloop after the drift event"
    assert runs[0].parameters["project_dir"] == str(tmp_path.resolve())
    # The event reaches the run (its MLflow run and version are tagged with it).
    trigger = runs[0].parameters["trigger"]
    assert trigger["target"] == "cohort-south" and trigger["drift_share"] == 0.66
    assert trigger["snapshot_id"] == "snap-1" and len(trigger["event_id"]) == 36
