"""What one drift check costs, and a monitor pass over many cohorts.

1. One device-cohort window (100 reports against 300 reference batch summaries)
   at 16, 64 and 128 features (42, 138 and 266 columns judged): the check before
   issue 36 (Evidently's report on every check, its verdicts read from it) against
   the monitor's check now (`monitoring.decision.check`: the same verdicts
   computed without the report, and the sequential test on the 100 new reports),
   on the same windows, in one run. The report is still what a dashboard snapshot
   costs, now only when a cohort's status changes.
2. One monitor pass over N cohorts of 100 reports each: every cohort's check
   submitted to the configured task runner (Prefect's thread pool, or Dask) inside a
   flow, as the monitor flow does, then e-BH across them (`monitoring.decision.judge`),
   for several N and column counts. Building the windows from the reports (in the
   flow, after one fleet query per cohort; cohorts on the same reference rows
   share its batch summaries) is timed apart. Runs on a temporary Prefect
   server (Prefect's test harness).

    .venv/bin/python -m bench.drift_scale [--cohorts 100 300 1000] [--runner threads]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import Params, load_params
from flows.monitor import check_window
from flows.runners import task_runner
from monitoring import sequential
from monitoring.decision import Shared, Window, check, device_window, judge
from stack.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64  # params.yaml fleet.telemetry_batch (main checks)
CLASSES = 10


def table(features: int, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """A labelled table of `features` correlated numbers."""
    mixing = rng.normal(size=(features, features)) / math.sqrt(features)
    x = rng.normal(size=(rows, features)) @ mixing
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(features)])
    frame["label"] = (np.abs(x[:, 0]) * 3).astype(int) % CLASSES
    return frame


def reports(
    pool: pd.DataFrame, n: int, rng: np.random.Generator, *, devices: int = 10
) -> list[dict]:
    """`n` telemetry reports of batches drawn from `pool`, newest first (as the
    fleet serves them), from `devices` devices."""
    x_all = pool.drop(columns="label").to_numpy(np.float64)
    y_all = pool["label"].astype(str).to_numpy()
    out = []
    for i in range(n):
        pick = rng.integers(0, len(pool), BATCH)
        x = x_all[pick]
        out.append(
            {
                "id": n - i,
                "device_id": f"d{i % devices}",
                "received_at": pd.Timestamp(1.8e9 + 360.0 * (n - i), unit="s"),
                "inferences": BATCH,
                "class_counts": pd.Series(y_all[pick]).value_counts().to_dict(),
                "feature_stats": {"mean": list(x.mean(0)), "std": list(x.std(0))},
            }
        )
    return out


def window(
    name: str, train: pd.DataFrame, sent: list[dict], params: Params, shared: Shared
) -> Window:
    return device_window(
        name, train, sent, params, source="training split", shared=shared
    )


def one_window(features: int, params: Params, repeats: int) -> tuple[int, float, float]:
    rng = np.random.default_rng(features)
    data = table(features, 3000, rng)
    train, held_out = data.iloc[:2000], data.iloc[2000:]
    w = window("cohort", train, reports(held_out, 100, rng), params, Shared())
    cfg = params.monitoring
    before, now = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        w.verdicts(cfg, snapshot=True)
        before.append(time.perf_counter() - start)
        start = time.perf_counter()
        check(w, cfg, sequential.Evidence())
        now.append(time.perf_counter() - start)
    return len(w.current.columns), min(before), min(now)


def one_pass(windows: list[Window], params: Params, runner: Settings) -> float:
    from prefect import flow

    @flow(name="bench-monitor-pass", task_runner=task_runner(runner))
    def monitor_pass() -> int:
        futures = [
            check_window.submit(w, params, sequential.Evidence()) for w in windows
        ]
        checks = [f.result() for f in futures]
        judged = judge(windows, checks, {}, params.monitoring, time.time())
        return sum(j.summary["flagged"] for j in judged)

    start = time.perf_counter()
    monitor_pass()
    return time.perf_counter() - start


def cohort_windows(
    cohorts: int, features: int, params: Params
) -> tuple[list[Window], float]:
    """`cohorts` windows on one reference (a tenth of them drifting); the seconds
    building them took."""
    rng = np.random.default_rng(0)
    data = table(features, 3000, rng)
    train, held_out = data.iloc[:2000], data.iloc[2000:]
    shifted = held_out.assign(x0=held_out["x0"] + 1.0, x1=held_out["x1"] + 1.0)
    sent = [
        reports(shifted if i % 10 == 0 else held_out, 100, rng) for i in range(cohorts)
    ]
    start = time.perf_counter()
    shared = Shared()
    out = [
        window(f"cohort-{i}", train, sent[i], params, shared) for i in range(cohorts)
    ]
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohorts", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--runner", choices=["threads", "dask"], default="threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    params = load_params(ROOT / "params.yaml")
    if params.fleet.telemetry_batch != BATCH:
        raise SystemExit(
            f"fleet.telemetry_batch is {params.fleet.telemetry_batch}, not {BATCH}"
        )
    print("1. one cohort window of 100 reports (best of", args.repeats, "runs)")
    for features in args.features:
        columns, before, now = one_window(features, params, args.repeats)
        print(
            f"   {features} features, {columns} columns: with Evidently's report "
            f"{before:.2f} s, the check now {now * 1000:.0f} ms "
            f"({before / now:.0f}x less)"
        )
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # offline
    from prefect.testing.utilities import prefect_test_harness

    runner = Settings(task_runner=args.runner, task_workers=args.workers)
    print(f"2. one monitor pass, {args.runner} x {args.workers}")
    with tempfile.TemporaryDirectory(), prefect_test_harness(120):
        sizes = [(n, 64) for n in args.cohorts]
        sizes += [(min(args.cohorts), f) for f in args.features if f != 64]
        for cohorts, features in sizes:
            windows, built = cohort_windows(cohorts, features, params)
            seconds = one_pass(windows, params, runner)
            columns = len(windows[0].current.columns)
            print(
                f"   {cohorts} cohorts x {columns} columns: checks and e-BH "
                f"{seconds:.1f} s ({seconds / cohorts * 1000:.0f} ms a cohort); "
                f"building the windows {built:.1f} s"
            )


if __name__ == "__main__":
    main()
