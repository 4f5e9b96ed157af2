"""The `monitor` flow: drift of serving's prediction log and of each fleet cohort's
telemetry against the training reference (Evidently), each check stored as a
snapshot in the Evidently workspace, and a Prefect event when drift persists.

The event (`edgeloop.drift.detected`, resource `edgeloop.drift.<target>`) carries the
target, drift share, drifted columns and snapshot id: what a Prefect automation
matches to start retraining."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from components.config import Params, load_params
from monitoring import drift, trigger
from monitoring.workspace import open_workspace, save

EVENT = "edgeloop.drift.detected"


@dataclass(frozen=True)
class Window:
    target: str
    reference: pd.DataFrame
    current: pd.DataFrame
    threshold_scale: float
    min_rows: int


def serving_window(project: Path, params: Params, train: pd.DataFrame) -> Window | None:
    folder = project / params.paths.prediction_log
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    if not files:
        return None
    log = pd.concat(pd.read_parquet(f) for f in files[-50:])
    reference, current = drift.serving_frames(
        train, log, params.monitoring.serving_window_rows
    )
    return Window(
        "serving", reference, current, 1.0, params.monitoring.serving_min_rows
    )


def device_windows(fleet_url: str, params: Params, train: pd.DataFrame) -> list[Window]:
    from edge_fleet.client import FleetAdmin
    from flows.edge_release import admin_token

    fleet = FleetAdmin(fleet_url, admin_token())
    batch = params.fleet.telemetry_batch
    windows = []
    for cohort in fleet.cohorts():
        reports = fleet.telemetry(cohort, params.monitoring.device_window_reports)
        reference, current = drift.device_frames(
            train,
            reports,
            batch=batch,
            reference_batches=params.monitoring.reference_batches,
        )
        windows.append(
            Window(
                f"cohort-{cohort}",
                reference,
                current,
                math.sqrt(batch),
                params.monitoring.device_min_reports,
            )
        )
    return windows


@task
def check_window(window: Window, params: Params, workspace_dir: str) -> dict:
    result = drift.check(
        window.target,
        window.reference,
        window.current,
        params.monitoring,
        threshold_scale=window.threshold_scale,
        min_rows=window.min_rows,
    )
    snapshot_id = None
    if result.snapshot is not None:
        snapshot_id = save(
            open_workspace(Path(workspace_dir)), window.target, result.snapshot
        )
    return result.summary() | {
        "snapshot_id": snapshot_id,
        "judged": result.snapshot is not None,
    }


@flow(name="monitor")
def monitor(
    project_dir: str = ".",
    *,
    workspace_dir: str,
    state_file: str,
    fleet_url: str | None = None,
) -> list[dict]:
    log = get_run_logger()
    project = Path(project_dir)
    params = load_params(project / "params.yaml")
    train = pd.read_parquet(project / params.paths.prepared / "train.parquet")
    windows = []
    serving = serving_window(project, params, train)
    if serving is not None:
        windows.append(serving)
    if fleet_url is not None:
        windows += device_windows(fleet_url, params, train)
    store = trigger.StateStore(Path(state_file))
    states = store.load()
    outcomes = []
    for window in windows:
        summary = check_window(window, params, workspace_dir)
        state = states.setdefault(window.target, trigger.TargetState())
        decision = trigger.decide(state, summary, params.monitoring, trigger.now())
        summary |= {"trigger": decision.trigger, "decision": decision.reason}
        if decision.trigger:
            event = emit_event(
                event=EVENT,
                resource={
                    "prefect.resource.id": f"edgeloop.drift.{window.target}",
                    "prefect.resource.name": window.target,
                },
                payload={
                    k: summary[k]
                    for k in (
                        "target",
                        "rows",
                        "drift_share",
                        "drifted_columns",
                        "snapshot_id",
                    )
                },
            )
            summary["event_id"] = str(event.id) if event else None
        log.info("drift %s: %s", window.target, summary)
        outcomes.append(summary)
    store.save(states)
    return outcomes
