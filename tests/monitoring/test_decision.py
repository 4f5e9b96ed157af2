"""A monitor pass's decision without the flow (monitoring/decision.py): cohorts on
one reference share its summaries and the sequential test's view of it; the
drifting cohort is flagged, the quiet ones are not, and a cohort with one loud
device is not; dashboards are due on a change of status or after the interval,
not at every pass; a cohort's observations are each taken once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from components.config import Params, load_params
from monitoring import decision, sequential, trigger
from tests.conftest import REPO


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def digits() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return frame.iloc[:1200], frame.iloc[1200:]


def _reports(rows, devices, n, *, bright=0.0, loud=None, seed=0):
    """`n` reports, round robin over `devices`; `bright` adds to every device's
    inputs, `loud` names the one device that gets +4."""
    rng = np.random.default_rng(seed)
    x_all = rows.drop(columns="label").to_numpy(np.float64)
    y_all = rows["label"].astype(str).to_numpy()
    out = []
    for i in range(n):
        device = devices[i % len(devices)]
        pick = rng.integers(0, len(rows), 64)
        x = x_all[pick] + bright + (4.0 if device == loud else 0.0)
        out.append(
            {
                "id": i + 1,
                "device_id": device,
                "received_at": f"2026-12-07T10:{i // 60:02d}:{i % 60:02d}Z",
                "inferences": 64,
                "class_counts": pd.Series(y_all[pick]).value_counts().to_dict(),
                "feature_stats": {"mean": list(x.mean(0)), "std": list(x.std(0))},
            }
        )
    return out


def _windows(digits, params, shared):
    train, held_out = digits
    devices = [f"d{i}" for i in range(4)]
    sent = {
        "cohort-bright": _reports(held_out, devices, 100, bright=2.0),
        "cohort-quiet": _reports(held_out, devices, 100, seed=1),
        "cohort-one-loud": _reports(held_out, devices, 100, loud="d0", seed=2),
    }
    return [
        decision.device_window(
            target, train, reports, params, source="training split", shared=shared
        )
        for target, reports in sent.items()
    ]


def test_cohorts_on_one_reference_share_its_summaries_and_null(digits, params):
    shared = decision.Shared()
    windows = _windows(digits, params, shared)
    assert len(shared.prepared) == 1 and len(shared.nulls) == 1
    assert all(w.null is windows[0].null for w in windows)
    # The shared view is the one the check would build for the window alone.
    alone = decision.Window(**{**windows[0].__dict__, "null": None})
    cfg = params.monitoring
    assert decision.check(windows[0], cfg, sequential.Evidence()).statistic == (
        decision.check(alone, cfg, sequential.Evidence()).statistic
    )


def test_the_drifting_cohort_is_flagged_and_snapshots_follow_its_status(digits, params):
    cfg = params.monitoring
    windows = _windows(digits, params, decision.Shared())
    states: dict[str, trigger.TargetState] = {}
    checks = [decision.check(w, cfg, sequential.Evidence()) for w in windows]
    assert [c.new for c in checks] == [100, 100, 100]
    judged = {
        w.target: j
        for w, j in zip(
            windows, decision.judge(windows, checks, states, cfg, 1000.0), strict=True
        )
    }
    bright, quiet, loud = (judged[w.target] for w in windows)
    assert bright.summary["flagged"] and bright.decision.trigger, bright.summary
    assert (
        bright.status == "flagged"
        and "flagged among 3 targets" in bright.summary["why"]
    )
    assert not quiet.summary["flagged"] and quiet.status == "quiet", quiet.summary
    # One device's reports are loud: not the cohort's drift (one device, one vote).
    assert not loud.summary["flagged"] and not loud.decision.trigger, loud.summary
    assert all(j.snapshot_due for j in judged.values())  # a first status each

    # The next pass sees the same reports: nothing new is taken, no status
    # changes but the triggered cohort's (its detector restarted), and the
    # others' dashboards are not due until the interval has passed.
    again = [decision.check(w, cfg, states[w.target].evidence) for w in windows]
    assert [c.new for c in again] == [0, 0, 0]
    later = decision.judge(windows, again, states, cfg, 1060.0)
    by_target = {w.target: j for w, j in zip(windows, later, strict=True)}
    assert not by_target["cohort-quiet"].snapshot_due
    assert not by_target["cohort-bright"].decision.trigger  # restarted, cooling down
    much_later = decision.judge(
        windows, again, states, cfg, 1060.0 + cfg.snapshot_interval_s
    )
    assert all(j.snapshot_due for j in much_later)


def test_a_status_names_each_case():
    result = decision.drift.DriftResult(
        "t", 10, 0.0, [], 0, False, None, None, 0, judged=True
    )
    quiet = decision.Checked(result, sequential.Evidence(), 1, 1.0, 10.0, 1.0, 0.0)
    alarm = decision.Checked(result, sequential.Evidence(), 1, 11.0, 10.0, 1.0, 0.0)
    assert decision.status(quiet, False) == "quiet"
    assert decision.status(alarm, False) == "alarm"
    assert decision.status(alarm, True) == "flagged"
