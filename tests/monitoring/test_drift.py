"""Drift checks with Evidently (real) on windows drawn from the reference's
distribution (no drift) and shifted (drift), for serving rows and for device
telemetry summaries; the verdicts computed without Evidently's report equal to its
own; the trigger's cooldown and small-window rule; and the monitor flow emitting a
Prefect event that names the drifting target, with snapshots only on a change."""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from components.config import MonitoringConfig
from monitoring import drift, trigger

CFG = MonitoringConfig()


@pytest.fixture(scope="module")
def digits_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return frame.iloc[:1200], frame.iloc[1200:]  # train (reference), held out


def _log(rows: pd.DataFrame, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    x = rows.drop(columns="label").to_numpy(np.float64)
    x = x + np.random.default_rng(seed).normal(0, noise, x.shape) if noise else x
    log = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    log["label"] = rows["label"].to_numpy()
    log["ts"] = np.arange(len(log))
    return log


def _reports(rows: pd.DataFrame, n: int, *, brightness: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_all = rows.drop(columns="label").to_numpy(np.float64)
    y_all = rows["label"].to_numpy()
    out = []
    for _ in range(n):
        pick = rng.integers(0, len(rows), 64)
        x = x_all[pick] + brightness
        counts = pd.Series(y_all[pick]).astype(str).value_counts()
        out.append(
            {
                "inferences": 64,
                "class_counts": counts.to_dict(),
                "feature_stats": {"mean": list(x.mean(0)), "std": list(x.std(0))},
            }
        )
    return out


def test_serving_window_from_the_reference_distribution_does_not_drift(digits_split):
    train, held_out = digits_split
    reference, current = drift.serving_frames(
        train, _log(held_out), 500, label_column="label"
    )
    result = drift.check("serving", reference, current, CFG)
    assert result.snapshot is not None and not result.drifted, result.summary()


def test_shifted_serving_window_drifts(digits_split):
    train, held_out = digits_split
    reference, current = drift.serving_frames(
        train, _log(held_out, noise=4.0), 500, label_column="label"
    )
    result = drift.check("serving", reference, current, CFG)
    assert result.drifted and result.drift_share >= CFG.drift_share, result.summary()
    assert len(result.drifted_columns) > 10
    # Next to drift, for the dashboards: data quality and the prediction distribution.
    values = _values(result)
    assert values["RowCount"] == 500
    assert values["DatasetMissingValueCount"]["share"] == 0
    shares = values["UniqueValueCount"]["shares"]
    assert set(shares) == {str(k) for k in range(10)}
    assert sum(shares.values()) == pytest.approx(1)


@pytest.mark.parametrize("shift", [0.4, 2.0])  # some columns drift; most
def test_the_verdicts_without_a_report_are_evidently_s_own(digits_split, shift):
    """`check(snapshot=False)` (milliseconds) gives the drifted share, columns and
    window verdict that Evidently's report gives on the same device window; each
    column's score is its ValueDrift value."""
    train, held_out = digits_split
    reports = _reports(held_out, 60, brightness=shift, seed=3)
    for i, report in enumerate(reports):
        report["device_id"] = f"d{i % 4}"
    reference, current = drift.device_frames(
        train, reports, batch=64, reference_batches=200, label_column="label"
    )
    args = (reference, current, CFG)
    kwargs = {"threshold_scale": math.sqrt(64), "min_rows": 30, "by_device": True}
    quick = drift.check("cohort", *args, snapshot=False, **kwargs)
    full = drift.check("cohort", *args, **kwargs)
    share, columns, window = drift.snapshot_verdicts(full.snapshot)
    assert quick.snapshot is None and quick.judged
    assert quick.drift_share == pytest.approx(share)
    assert sorted(quick.drifted_columns) == sorted(columns)
    assert quick.drifted == full.drifted and full.devices_drifted is not None
    scores = drift.column_drift(reference, current, [], CFG, math.sqrt(64))
    values = {
        m["config"]["column"]: m["value"]
        for m in full.snapshot.dict()["metrics"]
        if m["config"]["type"].endswith(":ValueDrift")
    }
    assert scores["score"].to_dict() == pytest.approx(values, rel=1e-9, abs=1e-12)
    del window  # the window verdict also weighs the devices' votes (check)


def test_wasserstein_of_all_columns_at_once_is_scipy_s_per_column():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 7))
    current = np.round(rng.normal(0.3, 2.0, size=(80, 7)), 1)  # with ties
    current[:, 3] = 1.0  # a constant column
    expected = [wasserstein_distance(reference[:, j], current[:, j]) for j in range(7)]
    assert drift.wasserstein_columns(reference, current) == pytest.approx(expected)


def _values(result: drift.DriftResult) -> dict:
    return {
        m["config"]["type"].rsplit(":", 1)[-1]: m["value"]
        for m in result.snapshot.dict()["metrics"]
        if m["config"].get("column", "").startswith(("share_", "prediction"))
        or m["config"]["type"].endswith(("RowCount", "DatasetMissingValueCount"))
    }


def test_device_telemetry_windows_with_and_without_a_shift(digits_split):
    train, held_out = digits_split
    scale = math.sqrt(64)
    reference, current = drift.device_frames(
        train,
        _reports(held_out, 60),
        batch=64,
        reference_batches=200,
        label_column="label",
    )
    clean = drift.check(
        "cohort-a", reference, current, CFG, threshold_scale=scale, min_rows=30
    )
    assert not clean.drifted, clean.summary()
    reference, current = drift.device_frames(
        train,
        _reports(held_out, 60, brightness=2.0, seed=1),
        batch=64,
        reference_batches=200,
        label_column="label",
    )
    shifted = drift.check(
        "cohort-b", reference, current, CFG, threshold_scale=scale, min_rows=30
    )
    assert shifted.drifted, shifted.summary()
    assert any(c.startswith("mean_f") for c in shifted.drifted_columns)
    class_means = [
        m["value"]
        for m in shifted.snapshot.dict()["metrics"]
        if m["config"]["type"].endswith(":MeanValue")
    ]
    assert len(class_means) == 10 and sum(class_means) == pytest.approx(1)


def test_a_malformed_stored_report_is_left_out_not_fatal(digits_split, caplog):
    """A report stored before the fleet server checked them (one feature too many,
    a non-finite mean) is left out of the window, with a warning; the rest of the
    fleet's reports are still judged."""
    train, held_out = digits_split
    reports = _reports(held_out, 30)
    longer = {k: [*v, 0.0] for k, v in reports[0]["feature_stats"].items()}
    infinite = {"mean": [math.inf] * 64, "std": [0.0] * 64}
    bad = [
        reports[0] | {"feature_stats": longer},
        reports[1] | {"feature_stats": infinite},
    ]
    with caplog.at_level("WARNING", logger="edgeloop.monitoring"):
        reference, current = drift.device_frames(
            train, bad + reports, batch=64, reference_batches=50, label_column="label"
        )
    assert len(current) == 30 and list(current.columns) == list(reference.columns)
    assert "left out 2 of 32 device reports" in caplog.text


def test_a_label_column_of_another_name_gives_the_same_windows(digits_split):
    """`data.label_column` is read, not assumed: the training rows' label column
    named `digit` gives the same reference and current frames as `label`, and the
    delayed-label accuracy reads the column it is told."""
    train, held_out = digits_split
    renamed = train.rename(columns={"label": "digit"})
    for frames in (
        lambda t, col: drift.serving_frames(t, _log(held_out), 500, label_column=col),
        lambda t, col: drift.device_frames(
            t, _reports(held_out, 30), batch=64, reference_batches=50, label_column=col
        ),
    ):
        for a, b in zip(frames(train, "label"), frames(renamed, "digit"), strict=True):
            pd.testing.assert_frame_equal(a, b)
    labelled = held_out.head(200).rename(columns={"label": "digit"})
    labelled = labelled.assign(prediction=labelled["digit"].astype(str))
    result = drift.performance("cohort-a", labelled, labelled, label_column="digit")
    assert result.accuracy == 1.0 and result.reference_accuracy == 1.0


def test_delayed_labels_of_two_named_classes_are_judged():
    """Two classes are a binary task to Evidently, whose positive label is 1
    unless named: 'benign'/'malignant' failed with KeyError: 1 (the loop on a
    held-out two-class table stopped there). Accuracy is the share of rows right,
    and a fall of it fails Evidently's test against the reference."""
    rng = np.random.default_rng(0)

    def answered(n: int, right: float) -> pd.DataFrame:
        truth = rng.choice(["benign", "malignant"], n, p=[0.6, 0.4])
        wrong = np.where(truth == "benign", "malignant", "benign")
        guess = np.where(rng.random(n) < right, truth, wrong)
        return pd.DataFrame({"diagnosis": truth, "prediction": guess})

    current, reference = answered(200, 0.7), answered(60, 0.97)
    result = drift.performance("cohort-a", current, reference, label_column="diagnosis")
    hits = (current.diagnosis == current.prediction).mean()
    assert result.accuracy == pytest.approx(hits) and result.degraded


def test_a_window_below_the_minimum_gets_no_verdict(digits_split):
    train, held_out = digits_split
    reference, current = drift.serving_frames(
        train, _log(held_out.head(10)), 500, label_column="label"
    )
    result = drift.check("serving", reference, current, CFG)
    assert result.snapshot is None and not result.drifted


def _check(flagged: bool, judged: bool = True) -> dict:
    why = "drift: evidence past its level" if flagged else "no drift"
    return {
        "target": "t",
        "rows": 100,
        "judged": judged,
        "flagged": flagged,
        "why": why,
    }


def test_a_flagged_target_triggers_then_cools_down_and_restarts_its_detector():
    cfg = MonitoringConfig(cooldown_s=600)
    state = trigger.TargetState()
    state.evidence.detector = [9.0] * len(state.evidence.detector)
    quiet = trigger.decide(state, _check(False), cfg, 0)
    assert not quiet.trigger and quiet.reason == "no drift"
    fired = trigger.decide(state, _check(True), cfg, 10)
    assert fired.trigger and state.triggers == 1
    assert state.evidence.statistic == 0  # a new detector after a trigger
    # Still flagged: no second retraining while cooling down.
    cooling = trigger.decide(state, _check(True), cfg, 50)
    assert not cooling.trigger and "cooling down" in cooling.reason
    # A small window is no verdict.
    small = trigger.decide(state, _check(True, judged=False), cfg, 60)
    assert not small.trigger and "too small" in small.reason
    # Drift that outlasts the cooldown starts the next retraining, once.
    assert trigger.decide(state, _check(True), cfg, 700).trigger
    assert not trigger.decide(state, _check(True), cfg, 710).trigger
    assert state.triggers == 2


def test_a_state_file_of_the_hysteresis_monitor_still_loads(tmp_path):
    """A state kept before the sequential test (its `streak`) keeps its triggers
    and history; its detector starts afresh."""
    path = tmp_path / "state.json"
    path.write_text(
        '{"cohort-a": {"streak": 1, "last_trigger": 5.0, "triggers": 2, '
        '"history": [{"at": 1}]}}'
    )
    [(target, state)] = trigger.StateStore(path).load().items()
    assert target == "cohort-a" and state.triggers == 2 and state.last_trigger == 5
    assert state.evidence.statistic == 0 and state.history == [{"at": 1}]
    trigger.StateStore(path).save({target: state})
    assert trigger.StateStore(path).load()[target].triggers == 2


def _monitored_project(digits_split, root: Path) -> None:
    """A project with a training split and a noisy serving log."""
    import yaml

    from tests.conftest import default_params_dict

    train, held_out = digits_split
    (root / "data" / "prepared").mkdir(parents=True)
    train.to_parquet(root / "data" / "prepared" / "train.parquet")
    (root / "data" / "predictions").mkdir(parents=True)
    _log(held_out, noise=4.0).to_parquet(root / "data" / "predictions" / "p.parquet")
    (root / "params.yaml").write_text(yaml.safe_dump(default_params_dict()))


@pytest.mark.integration
def test_monitor_flow_on_a_dask_cluster(digits_split, prefect_harness, tmp_path):
    """The same flow on a real distributed.LocalCluster of 2 worker processes (the
    checks run there; the flow stores their snapshots)."""
    from flows.monitor import monitor
    from flows.runners import task_runner
    from monitoring.workspace import open_workspace
    from stack.settings import Settings

    _monitored_project(digits_split, tmp_path)
    on_dask = monitor.with_options(
        task_runner=task_runner(Settings(task_runner="dask", task_workers=2))
    )
    [outcome] = on_dask(
        str(tmp_path),
        workspace_dir=str(tmp_path / "evidently"),
        state_file=str(tmp_path / "monitor.json"),
    )
    assert outcome.target == "serving" and outcome.drifted and outcome.trigger
    assert outcome.drift_share >= 0.3 and outcome.new_observations == 500
    workspace = open_workspace(tmp_path / "evidently")
    [project] = workspace.search_project("serving")
    assert [str(r) for r in workspace.list_runs(project.id)] == [outcome.snapshot_id]


@pytest.mark.integration
def test_monitor_flow_stores_snapshots_and_emits_one_event(
    digits_split, prefect_harness, tmp_path
):
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    from flows.monitor import monitor
    from stack.contracts import DRIFT_EVENT as EVENT

    _monitored_project(digits_split, tmp_path)
    kwargs = {
        "workspace_dir": str(tmp_path / "evidently"),
        "state_file": str(tmp_path / "monitor.json"),
    }
    # The window's 500 noisy rows, taken in order: the sequential test flags it
    # at the first pass.
    [first] = monitor(str(tmp_path), **kwargs)
    assert (first.target, first.drifted, first.flagged, first.trigger) == (
        "serving",
        True,
        True,
        True,
    )
    assert first.snapshot_id and first.evidence >= first.evidence_needed
    assert first.decision.startswith("drift: evidence")
    # The same log again: no new rows, so no new evidence (each row is taken
    # once) and the restarted detector stays quiet: one drift, one retraining.
    [second] = monitor(str(tmp_path), **kwargs)
    assert second.new_observations == 0 and not second.trigger
    assert second.decision.startswith("no drift: evidence 0, below its level")
    # Its status changed (flagged, then a drifted window only): a snapshot.
    # The third pass changes nothing: no snapshot (monitoring.snapshot_interval_s).
    [third] = monitor(str(tmp_path), **kwargs)
    assert second.snapshot_id and third.snapshot_id is None and not third.trigger

    from monitoring.workspace import open_workspace

    workspace = open_workspace(tmp_path / "evidently")
    [project] = workspace.search_project("serving")
    assert len(workspace.list_runs(project.id)) == 2
    assert project.dashboard.model().panels  # the dashboard ops teams open

    EventsWorker.drain_all()
    deadline = time.monotonic() + 30
    events: list[dict] = []
    while time.monotonic() < deadline and not events:
        reply = httpx.post(
            f"{PREFECT_API_URL.value()}/events/filter",
            json={"filter": {"event": {"name": [EVENT]}}, "limit": 10},
        )
        reply.raise_for_status()
        events = [
            e
            for e in reply.json()["events"]
            if e["payload"].get("snapshot_id") == first.snapshot_id
        ]
        time.sleep(0.5)
    [event] = events
    assert event["resource"]["prefect.resource.id"] == "edgeloop.drift.serving"
    assert event["payload"]["drift_share"] >= 0.3
