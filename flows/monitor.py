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
(monitoring/sequential.py) need no Evidently report; a target's snapshot (seconds)
is stored when its status changes, when it triggers, and at least every
`monitoring.snapshot_interval_s`."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from components.config import MonitoringConfig, Params, load_params
from components.data.features import MODEL_SPEC, ColumnEncoding, model_encoding
from components.optimization.runtime import predicted_labels
from edge_fleet.client import FleetAdmin
from flows.adapters.registry import data_card
from flows.runners import task_runner
from monitoring import drift, sequential, trigger
from monitoring.reference import (
    ChampionData,
    delayed_labels,
    general_rows,
    reference_rows,
)
from monitoring.workspace import open_workspace, save
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
class Window:
    target: str
    reference: pd.DataFrame
    current: pd.DataFrame
    threshold_scale: float
    min_rows: int
    reference_from: str  # "training split" or the target's own labelled rows
    by_device: bool = False  # a cohort's reports, each device one vote
    size: int = 100  # the window's configured rows (the e-value's observations)
    version: str = "-"  # the champion the reference belongs to


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
    batch = params.fleet.telemetry_batch
    windows = []
    # Cohorts with the same reference rows share their batch summaries.
    prepared: dict[str, drift.DeviceReference] = {}
    for cohort in fleet.cohorts():
        target = f"cohort-{cohort}"
        reports = fleet.telemetry(
            cohort,
            params.monitoring.device_window_reports,
            per_device=params.monitoring.max_reports_per_device,
        )
        rows, source = refs.rows(target)
        if source not in prepared:
            prepared[source] = drift.device_reference(
                rows,
                batch=batch,
                reference_batches=params.monitoring.reference_batches,
                label_column=params.data.label_column,
                encoding=refs.encoding,
            )
        reference, current = drift.device_frames(
            rows,
            reports,
            batch=batch,
            reference_batches=params.monitoring.reference_batches,
            label_column=params.data.label_column,
            encoding=refs.encoding,
            prepared=prepared[source],
        )
        windows.append(
            Window(
                target,
                reference,
                current,
                math.sqrt(batch),
                params.monitoring.device_min_reports,
                source,
                by_device=True,
                size=params.monitoring.device_window_reports,
                version=refs.version,
            )
        )
    return windows


DEFAULT_PER_MONTH = 1e6  # observations a month, until two arrivals are measured


@dataclass(frozen=True)
class Checked:
    """One target's check: the window's verdicts (no snapshot yet) and its
    sequential test after this pass's new observations."""

    result: drift.DriftResult
    evidence: sequential.Evidence
    new: int  # observations taken at this pass
    statistic: float  # the e-detector
    needed: float  # its alarm level
    evalue: float  # the window's betting wealth (for e-BH across targets)
    seconds: float

    @property
    def alarm(self) -> bool:
        return self.result.judged and self.statistic >= self.needed


@task
def check_window(
    window: Window, params: Params, evidence: sequential.Evidence
) -> Checked:
    """One target's verdicts (milliseconds) and its sequential test, on the
    observations that arrived since the last pass (each taken once, in order)."""
    t0 = time.perf_counter()
    cfg = params.monitoring
    result = drift.check(
        window.target,
        window.reference,
        window.current,
        cfg,
        threshold_scale=window.threshold_scale,
        min_rows=window.min_rows,
        by_device=window.by_device,
        snapshot=False,
    )
    categorical = drift.categorical_columns(window.reference, window.current)
    null = sequential.Null.of(window.reference, categorical)
    key = f"v{window.version} {window.reference_from} {null.key}"
    evidence = copy.deepcopy(evidence)
    if evidence.reference != key:  # a new champion, reference or layout
        evidence = sequential.Evidence(reference=key)
    order, arrived = arrivals(window)
    after = -np.inf if evidence.cursor is None else float(evidence.cursor)
    new = np.flatnonzero(order > after)
    new = new[np.argsort(order[new], kind="stable")]
    if len(new):
        sequential.observe(
            evidence,
            null,
            window.current.iloc[new],
            cfg,
            scale=window.threshold_scale,
            window=window.size,
        )
        evidence.cursor = repr(float(order[new[-1]]))
        times = arrived[new][np.isfinite(arrived[new])]
        if len(times):
            evidence.first_at = evidence.first_at or float(times.min())
            evidence.last_at = float(times.max())
    return Checked(
        result,
        evidence,
        len(new),
        evidence.statistic,
        sequential.threshold(evidence, cfg, DEFAULT_PER_MONTH),
        evidence.evalue(),
        time.perf_counter() - t0,
    )


def arrivals(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Each row's place in the order of arrival (a report's id; a logged row's
    time) and its arrival time (NaN unknown)."""
    index = window.current.index
    if window.by_device:
        return (
            index.get_level_values(drift.REPORT).to_numpy(np.float64),
            index.get_level_values(drift.ARRIVED).to_numpy(np.float64),
        )
    order = index.to_numpy(np.float64)
    return order, order if index.name == drift.ARRIVED else np.full(len(order), np.nan)


@task
def snapshot_window(window: Window, params: Params, version: str) -> object:
    """The window's Evidently report for its dashboard."""
    return drift.evidently_snapshot(
        window.target,
        window.reference,
        window.current,
        drift.categorical_columns(window.reference, window.current),
        params.monitoring,
        threshold_scale=window.threshold_scale,
        metadata={"version": version},
    )


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
        judged = judge(windows, checks, states, params, trigger.now())
        due = {
            w.target: runner.submit(
                snapshot_window,
                {"window": w, "params": params, "version": refs.version},
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
    return outcomes


@dataclass
class Judged:
    """One target's decision at this pass, before anything is stored."""

    check: Checked
    summary: dict
    decision: trigger.Decision
    status: str
    snapshot_due: bool


def judge(
    windows: list[Window],
    checks: list[Checked],
    states: dict[str, trigger.TargetState],
    params: Params,
    now: float,
) -> list[Judged]:
    """The targets flagged at this pass (each past its e-detector's alarm level,
    and together an e-BH set at `monitoring.false_alarm_level`; a cohort only with
    `monitoring.min_devices` devices whose own reports drift), each one's
    trigger decision, and which get a dashboard snapshot (a new status, a
    trigger, or `monitoring.snapshot_interval_s` since the last)."""
    cfg = params.monitoring
    evalues = {
        w.target: (c.evalue if c.alarm else 0.0)
        for w, c in zip(windows, checks, strict=True)
        if c.result.judged
    }
    chosen = sequential.ebh(evalues, cfg.false_alarm_level)
    out = []
    for window, check in zip(windows, checks, strict=True):
        state = states.setdefault(window.target, trigger.TargetState())
        state.evidence = check.evidence
        result = check.result
        flagged, why = verdict(window, check, chosen, len(evalues), cfg)
        summary = result.summary() | {
            "judged": result.judged,
            "flagged": flagged,
            "why": why,
            "reference": window.reference_from,
            "evidence": check.statistic,
            "evidence_needed": check.needed,
            "new_observations": check.new,
            "check_s": round(check.seconds, 4),
        }
        decision = trigger.decide(state, summary, cfg, now)
        status = (
            "flagged"
            if flagged
            else "alarm"
            if check.alarm
            else "drifted window"
            if result.drifted
            else "quiet"
            if result.judged
            else "not judged"
        )
        due = result.judged and (
            decision.trigger
            or status != state.snapshot_status
            or state.snapshot_at is None
            or now - state.snapshot_at >= cfg.snapshot_interval_s
        )
        if due:
            state.snapshot_at, state.snapshot_status = now, status
        out.append(Judged(check, summary, decision, status, due))
    return out


def verdict(
    window: Window,
    check: Checked,
    chosen: set[str],
    judged: int,
    cfg: MonitoringConfig,
) -> tuple[bool, str]:
    """Whether the target is flagged at this pass, and why, in words."""
    evidence = sequential.describe(check.statistic, check.needed)
    if not check.alarm:
        return False, f"no drift: {evidence}"
    if window.target not in chosen:
        return False, (
            f"{evidence}, but not among the targets flagged at a false "
            f"discovery rate of {cfg.false_alarm_level} ({judged} judged)"
        )
    result = check.result
    if window.by_device and (result.devices_drifted or 0) < cfg.min_devices:
        return False, (
            f"{evidence}, but {result.devices_drifted} of {result.devices} "
            f"devices' own reports drift (at least {cfg.min_devices} must)"
        )
    return True, (
        f"drift: {evidence} (at most {cfg.false_alarm_level} false alarms "
        f"a month), flagged among {judged} targets"
    )


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
