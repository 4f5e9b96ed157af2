"""The `monitor` flow: drift of serving's prediction log and of each fleet cohort's
telemetry against the champion's reference (Evidently; monitoring/reference.py),
the champion's accuracy on each target's delayed labels, each check stored as a
snapshot in the Evidently workspace, and a Prefect event when drift persists.

The event (`edgeloop.drift.detected`, resource `edgeloop.drift.<target>`) carries the
target, drift share, drifted columns and snapshot id: what a Prefect automation
matches to start retraining."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from evidently.ui.workspace import Workspace
from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from components.config import Params, load_params
from flows.runners import task_runner
from monitoring import drift, trigger
from monitoring.reference import (
    ChampionData,
    delayed_labels,
    general_rows,
    reference_rows,
)
from monitoring.workspace import open_workspace, save

EVENT = "edgeloop.drift.detected"


def champion_data(tracking_uri: str, model_name: str) -> ChampionData | None:
    """The champion's version and the labelled files in its data version (its data
    card); None when the registry has no champion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from flows.registry import CHAMPION
    from flows.tracking import data_card

    try:
        version = MlflowClient(tracking_uri).get_model_version_by_alias(
            model_name, CHAMPION
        )
    except MlflowException:
        return None
    card = data_card(tracking_uri, version.run_id) or {}
    return ChampionData(version.version, frozenset(card.get("incoming_files", [])))


@dataclass(frozen=True)
class Window:
    target: str
    reference: pd.DataFrame
    current: pd.DataFrame
    threshold_scale: float
    min_rows: int
    reference_from: str  # "training split" or the target's own labelled rows


@dataclass(frozen=True)
class References:
    """Each target's reference: its own labelled rows in the champion's data when
    there are enough, else the training split (monitoring/reference.py)."""

    project: Path
    params: Params
    train: pd.DataFrame
    champion: ChampionData | None

    def rows(self, target: str) -> tuple[pd.DataFrame, str]:
        own = reference_rows(self.project, self.params, target, self.champion)
        if own is not None:
            version = self.champion.version if self.champion else "-"
            return own, f"{len(own)} labelled rows of {target} (v{version})"
        general = general_rows(self.project, self.params, self.train, self.champion)
        left_out = len(self.train) - len(general)
        return general, "training split" + (
            f" without {left_out} rows of other targets" if left_out else ""
        )


def serving_window(project: Path, params: Params, refs: References) -> Window | None:
    folder = project / params.paths.prediction_log
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    if not files:
        return None
    log = pd.concat(pd.read_parquet(f) for f in files[-50:])
    rows, source = refs.rows("serving")
    reference, current = drift.serving_frames(
        rows, log, params.monitoring.serving_window_rows
    )
    return Window(
        "serving", reference, current, 1.0, params.monitoring.serving_min_rows, source
    )


def device_windows(fleet_url: str, params: Params, refs: References) -> list[Window]:
    from edge_fleet.client import FleetAdmin
    from flows.edge_release import admin_token

    fleet = FleetAdmin(fleet_url, admin_token())
    batch = params.fleet.telemetry_batch
    windows = []
    for cohort in fleet.cohorts():
        target = f"cohort-{cohort}"
        reports = fleet.telemetry(cohort, params.monitoring.device_window_reports)
        rows, source = refs.rows(target)
        reference, current = drift.device_frames(
            rows,
            reports,
            batch=batch,
            reference_batches=params.monitoring.reference_batches,
        )
        windows.append(
            Window(
                target,
                reference,
                current,
                math.sqrt(batch),
                params.monitoring.device_min_reports,
                source,
            )
        )
    return windows


@task
def check_window(window: Window, params: Params) -> drift.DriftResult:
    """One target's drift check; the flow stores its snapshot (Evidently's local
    workspace is not safe for concurrent writers, the checks run in parallel)."""
    return drift.check(
        window.target,
        window.reference,
        window.current,
        params.monitoring,
        threshold_scale=window.threshold_scale,
        min_rows=window.min_rows,
    )


def stored(window: Window, result: drift.DriftResult, workspace: Workspace) -> dict:
    """The check's summary, its snapshot saved in the target's project."""
    snapshot_id = None
    if result.snapshot is not None:
        snapshot_id = save(workspace, window.target, result.snapshot)
    return result.summary() | {
        "snapshot_id": snapshot_id,
        "judged": result.snapshot is not None,
        "reference": window.reference_from,
    }


@task
def check_delayed_labels(
    target: str,
    labelled: pd.DataFrame,
    refs: References,
    tracking_uri: str,
) -> drift.PerformanceResult:
    """The champion's accuracy (the serving variant) on labels that arrived for the
    target after its training data, against its own test split (Evidently's
    ClassificationPreset)."""
    from components.runtime import predicted_labels
    from serving.model_source import AliasSource

    params, champion = refs.params, refs.champion
    assert champion is not None
    test = pd.read_parquet(refs.project / params.paths.prepared / "test.parquet")
    loaded = AliasSource(tracking_uri, params.registry.model_name, params.serving).load(
        champion.version
    )

    def with_predictions(frame: pd.DataFrame) -> pd.DataFrame:
        labels = predicted_labels(loaded.runtime, frame, loaded.classes)
        return frame.assign(**{drift.PREDICTION: labels})

    return drift.performance(
        target,
        with_predictions(labelled),
        with_predictions(test),
        metadata={"version": champion.version, "variant": loaded.variant},
    )


@flow(name="monitor", task_runner=task_runner())
def monitor(
    project_dir: str = ".",
    *,
    workspace_dir: str,
    state_file: str,
    fleet_url: str | None = None,
    tracking_uri: str | None = None,
) -> list[dict]:
    """Check every target once. Without `tracking_uri` (no registry) the reference is
    the training split and delayed labels are not checked."""
    log = get_run_logger()
    project = Path(project_dir)
    params = load_params(project / "params.yaml")
    prepared = project / params.paths.prepared
    champion = (
        champion_data(tracking_uri, params.registry.model_name)
        if tracking_uri
        else None
    )
    refs = References(
        project, params, pd.read_parquet(prepared / "train.parquet"), champion
    )
    windows = []
    serving = serving_window(project, params, refs)
    if serving is not None:
        windows.append(serving)
    if fleet_url is not None:
        windows += device_windows(fleet_url, params, refs)
    # Every target's checks at once, on the flow's task runner (threads or Dask);
    # their snapshots are stored here, one at a time.
    checks = [check_window.submit(w, params) for w in windows]
    accuracy = {}
    for window in windows:
        labelled = delayed_labels(project, params, window.target, champion)
        if labelled is not None and champion is not None and tracking_uri:
            accuracy[window.target] = check_delayed_labels.submit(
                window.target, labelled, refs, tracking_uri
            )
    workspace = open_workspace(Path(workspace_dir))
    store = trigger.StateStore(Path(state_file))
    states = store.load()
    outcomes = []
    for window, check in zip(windows, checks, strict=True):
        summary = stored(window, check.result(), workspace)
        state = states.setdefault(window.target, trigger.TargetState())
        decision = trigger.decide(state, summary, params.monitoring, trigger.now())
        summary |= {"trigger": decision.trigger, "decision": decision.reason}
        if window.target in accuracy:
            performance = accuracy[window.target].result()
            summary |= performance.summary() | {
                "performance_snapshot_id": save(
                    workspace, window.target, performance.snapshot
                )
            }
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
