"""The stack's Prefect deployments, their schedules and the drift automation.

`edgeloop up` registers, on a process work pool (`edgeloop`) that the worker it
starts polls:

- `training_pipeline/edgeloop`, on `monitoring.retrain_cron`, and with a deployment
  trigger (an automation Prefect creates with it) that runs it on every
  `edgeloop.drift.detected` event the monitor flow emits;
- `monitor/edgeloop`, on `monitoring.schedule_cron`;
- `edge_release/edgeloop`, run on demand with a version.

The monitor's trigger does the de-duplication (a detector restarted on each
trigger, a cooldown), so one event means one retraining."""

from __future__ import annotations

from pathlib import Path

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectAlreadyExists

from components.config import Params
from stack.contracts import DRIFT_EVENT, DRIFT_RESOURCE_PREFIX, WORK_POOL
from stack.settings import Settings

SOURCE = Path(__file__).resolve().parent.parent


# Prefect renders these from the triggering event (Jinja) when the automation runs
# the deployment. A bare "{{ x }}" is rendered through `tojson` to keep its type,
# which a UUID does not survive: the event id is rendered as text.
DRIFT_EVENT_PARAMETERS = {
    "event_id": {"__prefect_kind": "jinja", "template": "{{ event.id }}"},
    "target": "{{ event.payload.target }}",
    "drift_share": "{{ event.payload.drift_share }}",
    "snapshot_id": "{{ event.payload.snapshot_id }}",
}


def ensure_pool() -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        except ObjectAlreadyExists:
            pass


def register(settings: Settings, project: Path, params: Params) -> dict[str, str]:
    """Create or update the deployments; returns their ids by flow name."""
    ensure_pool()
    ids = {}
    # One run of each at a time: two drifting targets in one monitor run start two
    # retrainings, and two DVC runs in one project must not overlap (the second
    # waits, then finds the data version already trained).
    for name, (entrypoint, parameters, cron, triggers) in specs(
        settings, project, params
    ).items():
        flow = Flow.from_source(source=str(SOURCE), entrypoint=entrypoint)
        ids[name] = str(
            flow.deploy(
                name="edgeloop",
                work_pool_name=WORK_POOL,
                parameters=parameters,
                cron=cron,
                triggers=triggers,
                concurrency_limit=1,
                print_next_steps=False,
                ignore_warnings=True,
            )
        )
    return ids


def specs(settings: Settings, project: Path, params: Params) -> dict[str, tuple]:
    """Each deployment's entrypoint, parameters, schedule and triggers."""
    project = project.resolve()
    state = settings.state_dir.resolve()
    training = {"project_dir": str(project), "tracking_uri": settings.tracking_uri}
    retrain_on_drift = DeploymentEventTrigger(
        name="edgeloop: retrain on drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": f"{DRIFT_RESOURCE_PREFIX}*"},
        posture="Reactive",
        threshold=1,
        within=0,
        # The event, templated into the run: its MLflow run and version are
        # tagged with it (flows/training.py, why_tags).
        parameters=training | {"trigger": DRIFT_EVENT_PARAMETERS},
    )
    return {
        "training_pipeline": (
            "flows/training.py:training_pipeline",
            training,
            params.monitoring.retrain_cron,
            [retrain_on_drift],
        ),
        "monitor": (
            "flows/monitor.py:monitor",
            {
                "project_dir": str(project),
                "workspace_dir": str(state / "evidently"),
                "state_file": str(state / "monitor" / "state.json"),
                "fleet_url": settings.fleet_url,
                "tracking_uri": settings.tracking_uri,
            },
            params.monitoring.schedule_cron,
            None,
        ),
        "edge_release": (
            "flows/edge_release.py:edge_release",
            {"tracking_uri": settings.tracking_uri, "fleet_url": settings.fleet_url},
            None,
            None,
        ),
    }
