"""The `monitor` flow: drift of serving's prediction log and of each fleet cohort's
telemetry against the champion's reference (Evidently; monitoring/reference.py),
the champion's accuracy on each target's delayed labels, each check stored as a
snapshot in the Evidently workspace, and a Prefect event when drift persists.

The event (`stack.contracts.DRIFT_EVENT`, resource `edgeloop.drift.<target>`)
carries the target, drift share, drifted columns and snapshot id: what a Prefect
automation matches to start retraining. Each target's outcome is a
`stack.contracts.DriftOutcome`.

The per-target checks run on the task runner the settings name (`flows/runners.py`),
chosen when the flow runs, not when this module is imported. Each costs
milliseconds: the window's verdicts and the sequential test's new observations
(monitoring/sequential.py) need no Evidently report. What is flagged, what
retrains and which targets get a snapshot is decided across targets
(monitoring/decision.py); a snapshot (seconds) is stored when a target's status
changes, when it triggers, and at least every `monitoring.snapshot_interval_s`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from evidently.core.report import Snapshot
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from components.config import Params, load_params
from components.data.features import MODEL_SPEC, ColumnEncoding, model_encoding
from components.errors import ServiceError
from components.optimization.runtime import predicted_labels
from edge_fleet.client import FleetAdmin
from flows.adapters.registry import data_card
from flows.runners import task_runner
from monitoring import drift, sequential, trigger
from monitoring.decision import (
    Checked,
    Judged,
    Shared,
    Window,
    check,
    device_window,
    judge,
)
from monitoring.reference import (
    ChampionData,
    delayed_labels,
    general_rows,
    reference_rows,
)
from monitoring.workspace import open_workspace, project_for, save
from serving.model_source import AliasSource
from stack.contracts import DRIFT_EVENT, DRIFT_RESOURCE_PREFIX, Alias, DriftOutcome
from stack.secrets import fleet_admin_token
from stack.settings import get_settings


def champion_data(tracking_uri: str, model_name: str) -> ChampionData | None:
    """The champion's version and the labelled files in its data version (its data
    card); None when the registry has no champion."""
    try:
        version = MlflowClient(tracking_uri).get_model_version_by_alias(
            model_name, Alias.CHAMPION
        )
    except MlflowException:
        return None
    card = data_card(tracking_uri, version.run_id) or {}
    return ChampionData(version.version, frozenset(card.get("incoming_files", [])))


@dataclass(frozen=True)
class References:
    """Each target's reference: its own labelled rows in the champion's data when
    there are enough, else the training split (monitoring/reference.py)."""

    project: Path
    params: Params
    train: pd.DataFrame
    champion: ChampionData | None
    encoding: tuple[ColumnEncoding, ...] = ()  # the trained model's (features:)

    @property
    def version(self) -> str:
        return self.champion.version if self.champion else "-"

    def rows(self, target: str) -> tuple[pd.DataFrame, str]:
        own = reference_rows(self.project, self.params, target, self.champion)
        if own is not None:
            version = self.champion.version if self.champion else "-"
            # An incoming file has the source's columns; the model, the training
            # split's (`features.drop` leaves some out).
            own = own[list(self.train.columns)]
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
        rows,
        log,
        params.monitoring.serving_window_rows,
        label_column=params.data.label_column,
        encoding=refs.encoding,
    )
    return Window(
        "serving",
        reference,
        current,
        1.0,
        params.monitoring.serving_min_rows,
        source,
        size=params.monitoring.serving_window_rows,
        version=refs.version,
    )


def device_windows(fleet_url: str, params: Params, refs: References) -> list[Window]:
    fleet = FleetAdmin(fleet_url, fleet_admin_token(get_settings()))
    shared = Shared()  # cohorts on the same reference rows share their summaries
    windows = []
    for cohort in fleet.cohorts():
        target = f"cohort-{cohort}"
        reports = fleet.telemetry(
            cohort,
            params.monitoring.device_window_reports,
            per_device=params.monitoring.max_reports_per_device,
        )
        rows, source = refs.rows(target)
        windows.append(
            device_window(
                target,
                rows,
                reports,
                params,
                source=source,
                shared=shared,
                encoding=refs.encoding,
                version=refs.version,
            )
        )
    return windows


@task
def check_window(
    window: Window, params: Params, evidence: sequential.Evidence
) -> Checked:
    """One target's verdicts and sequential test (`monitoring.decision.check`)."""
    return check(window, params.monitoring, evidence)


@task
def snapshot_window(window: Window, params: Params) -> Snapshot:
    """The window's Evidently report for its dashboard."""
    return window.snapshot(params.monitoring)


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
    params, champion = refs.params, refs.champion
    assert champion is not None
    test = pd.read_parquet(refs.project / params.paths.prepared / "test.parquet")
    loaded = AliasSource(tracking_uri, params.registry.model_name, params.serving).load(
        champion.version
    )

    label = params.data.label_column

    def with_predictions(frame: pd.DataFrame) -> pd.DataFrame:
        labels = predicted_labels(
            loaded.runtime,
            frame,
            loaded.classes,
            label_column=label,
            encoding=loaded.encoding,
            features=loaded.feature_columns,
        )
        return frame.assign(**{drift.PREDICTION: labels})

    return drift.performance(
        target,
        with_predictions(labelled),
        with_predictions(test),
        label_column=label,
        metadata={"version": champion.version, "variant": loaded.variant},
    )


@flow(name="monitor")
def monitor(
    project_dir: str = ".",
    *,
    workspace_dir: str,
    state_file: str,
    fleet_url: str | None = None,
    tracking_uri: str | None = None,
) -> list[DriftOutcome]:
    """Check every target once. Without `tracking_uri` (no registry) the reference is
    the training split and delayed labels are not checked."""
    project = Path(project_dir)
    params = load_params(project / "params.yaml")
    champion = (
        champion_data(tracking_uri, params.registry.model_name)
        if tracking_uri
        else None
    )
    train = pd.read_parquet(project / params.paths.prepared / "train.parquet")
    model_dir = project / params.paths.model
    encoding = (
        tuple(model_encoding(model_dir)) if (model_dir / MODEL_SPEC).exists() else ()
    )
    refs = References(project, params, train, champion, encoding)
    windows = []
    serving = serving_window(project, params, refs)
    if serving is not None:
        windows.append(serving)
    if fleet_url is not None:
        windows += device_windows(fleet_url, params, refs)
    store = trigger.StateStore(Path(state_file))
    states = store.load()
    # Every target's checks at once, on the task runner the settings name (threads
    # or Dask); the decisions across targets, then the snapshots they call for.
    with task_runner(get_settings()) as runner:
        futures = [
            runner.submit(
                check_window,
                {
                    "window": w,
                    "params": params,
                    "evidence": states.get(w.target, trigger.TargetState()).evidence,
                },
            )
            for w in windows
        ]
        accuracy = {}
        for window in windows:
            labelled = delayed_labels(project, params, window.target, champion)
            if labelled is not None and champion is not None and tracking_uri:
                accuracy[window.target] = runner.submit(
                    check_delayed_labels,
                    {
                        "target": window.target,
                        "labelled": labelled,
                        "refs": refs,
                        "tracking_uri": tracking_uri,
                    },
                )
        checks = [f.result() for f in futures]
        judged = judge(windows, checks, states, params.monitoring, trigger.now())
        due = {
            w.target: runner.submit(
                snapshot_window,
                {"window": w, "params": params},
            )
            for w, j in zip(windows, judged, strict=True)
            if j.snapshot_due
        }
        snapshots = {t: f.result() for t, f in due.items()}
        performances = {t: f.result() for t, f in accuracy.items()}
    outcomes = store_outcomes(
        windows,
        judged,
        snapshots,
        performances,
        workspace_dir=Path(workspace_dir),
    )
    store.save(states)
    if fleet_url is not None:
        report_cohorts(fleet_url, outcomes, Path(workspace_dir))
    return outcomes


COHORT = "cohort-"  # a device cohort's target: cohort-<name>


def report_cohorts(
    fleet_url: str, outcomes: list[DriftOutcome], workspace_dir: Path
) -> None:
    """Each cohort's outcome to the fleet server, where the console shows its
    status and trend, linking to its snapshot in the Evidently UI. A fleet that
    does not take it loses one point of the trend, not the check (the drift
    decision and event are already stored): a warning."""
    fleet = FleetAdmin(fleet_url, fleet_admin_token(get_settings()))
    workspace = open_workspace(workspace_dir)
    evidently = get_settings().evidently_url
    for outcome in outcomes:
        if not outcome.target.startswith(COHORT):
            continue
        report = {
            k: getattr(outcome, k)
            for k in (
                "drifted",
                "judged",
                "flagged",
                "trigger",
                "drift_share",
                "rows",
                "devices",
                "devices_drifted",
                "evidence",
                "evidence_needed",
                "decision",
                "snapshot_id",
                "event_id",
            )
        }
        report["decision"] = (report["decision"] or "")[:500]
        if report["evidence"] is not None:  # an e-value past any float: the largest
            report["evidence"] = min(float(report["evidence"]), sys.float_info.max)
        if outcome.snapshot_id:
            project = project_for(workspace, outcome.target).id
            report["snapshot_url"] = (
                f"{evidently}/projects/{project}/reports/{outcome.snapshot_id}"
            )
        try:
            fleet.report_cohort_check(outcome.target.removeprefix(COHORT), report)
        except ServiceError as refused:
            get_run_logger().warning("cohort %s: %s", outcome.target, refused)


def store_outcomes(
    windows: list[Window],
    judged: list[Judged],
    snapshots: dict[str, object],
    performances: dict[str, drift.PerformanceResult],
    *,
    workspace_dir: Path,
) -> list[DriftOutcome]:
    """Each target's snapshots stored, its outcome, and the event when it
    triggers."""
    log = get_run_logger()
    workspace = open_workspace(workspace_dir)
    outcomes = []
    for window, j in zip(windows, judged, strict=True):
        summary = dict(j.summary)
        snapshot = snapshots.get(window.target)
        summary["snapshot_id"] = (
            save(workspace, window.target, snapshot) if snapshot is not None else None
        )
        summary |= {"trigger": j.decision.trigger, "decision": j.decision.reason}
        performance = performances.get(window.target)
        if performance is not None:
            summary |= performance.summary() | {
                "performance_snapshot_id": save(
                    workspace, window.target, performance.snapshot
                )
            }
        if j.decision.trigger:
            summary["event_id"] = emit_drift_event(summary)
        log.info("drift %s: %s", window.target, summary)
        known = set(DriftOutcome.__dataclass_fields__)
        outcomes.append(
            DriftOutcome(**{k: v for k, v in summary.items() if k in known})
        )
    return outcomes


def emit_drift_event(summary: dict) -> str | None:
    """The Prefect event the retraining deployment's trigger matches; its id."""
    event = emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"{DRIFT_RESOURCE_PREFIX}{summary['target']}",
            "prefect.resource.name": summary["target"],
        },
        payload={
            k: summary[k]
            for k in ("target", "rows", "drift_share", "drifted_columns", "snapshot_id")
        },
    )
    return str(event.id) if event else None
