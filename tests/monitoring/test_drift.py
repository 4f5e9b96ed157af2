"""Drift checks with Evidently (real) on windows drawn from the reference's
distribution (no drift) and shifted (drift), for serving rows and for device
telemetry summaries; the trigger's hysteresis, cooldown and small-window rule; and
the monitor flow emitting a Prefect event that names the drifting target."""

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


def _check(drifted: bool, judged: bool = True) -> dict:
    return {"target": "t", "rows": 100, "drifted": drifted, "judged": judged}


def test_trigger_needs_consecutive_windows_and_then_cools_down():
    cfg = MonitoringConfig(consecutive=2, cooldown_s=600)
    state = trigger.TargetState()
    assert not trigger.decide(state, _check(True), cfg, 0).trigger  # 1 of 2
    assert not trigger.decide(state, _check(False), cfg, 10).trigger  # streak reset
    assert not trigger.decide(state, _check(True), cfg, 20).trigger
    fired = trigger.decide(state, _check(True), cfg, 30)
    assert fired.trigger and state.triggers == 1
    # Still drifting: no second retraining while cooling down.
    trigger.decide(state, _check(True), cfg, 40)
    cooling = trigger.decide(state, _check(True), cfg, 50)
    assert not cooling.trigger and "cooling down" in cooling.reason
    # A small window neither counts nor resets.
    assert not trigger.decide(state, _check(True, judged=False), cfg, 60).trigger
    # Drift that outlasts the cooldown starts the next retraining, once.
    assert trigger.decide(state, _check(True), cfg, 700).trigger
    assert not trigger.decide(state, _check(True), cfg, 710).trigger
    assert state.triggers == 2


def _monitored_project(digits_split, root: Path) -> None:
    """A project with a training split and a noisy serving log."""
    import yaml

    from tests.conftest import default_params_dict

    train, held_out = digits_split
    (root / "data" / "prepared").mkdir(parents=True)
    train.to_parquet(root / "data" / "prepared" / "train.parquet")
    (root / "data" / "predictions").mkdir(parents=True)
    _log(held_out, noise=4.0).to_parquet(root / "data" / "predictions" / "p.parquet")
    (root / "params.yaml").write_text(
        yaml.safe_dump(default_params_dict(monitoring={"consecutive": 2}))
    )


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
    assert outcome.target == "serving" and outcome.drifted
    assert outcome.drift_share >= 0.3 and not outcome.trigger  # 1 of 2
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
    first = monitor(str(tmp_path), **kwargs)
    assert [(o.target, o.drifted, o.trigger) for o in first] == [
        ("serving", True, False)
    ]
    second = monitor(str(tmp_path), **kwargs)
    assert second[0].trigger and second[0].snapshot_id
    third = monitor(str(tmp_path), **kwargs)
    assert not third[0].trigger  # one drifting target, one retraining

    from monitoring.workspace import open_workspace

    workspace = open_workspace(tmp_path / "evidently")
    [project] = workspace.search_project("serving")
    assert len(workspace.list_runs(project.id)) == 3
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
            if e["payload"].get("snapshot_id") == second[0].snapshot_id
        ]
        time.sleep(0.5)
    [event] = events
    assert event["resource"]["prefect.resource.id"] == "edgeloop.drift.serving"
    assert event["payload"]["drift_share"] >= 0.3
