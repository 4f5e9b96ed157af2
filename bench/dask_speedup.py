"""Speed-up of the monitor flow's parallel part on a Dask task runner with 2 worker
processes against 1, in one run, on the same windows: each target's check
(`flows.monitor.check_window`) and its Evidently snapshot
(`flows.monitor.snapshot_window`, what a first check or a status change costs).

Each runner runs a flow that submits every target's check and snapshot, waits for
all of them and stores the snapshots (as the monitor flow does); the time includes
starting and stopping the `distributed.LocalCluster` (what a monitor run pays).
Prefect's thread pool (the default runner) is timed too. Runs on a temporary Prefect
server (Prefect's test harness).

    .venv/bin/python -m bench.dask_speedup [--targets 4] [--repeats 1]
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
from sklearn.datasets import load_digits

from bench.drift_scale import reports as as_reports
from components.config import load_params
from flows.monitor import check_window, snapshot_window
from flows.runners import task_runner
from monitoring import drift, sequential
from monitoring.decision import Window
from monitoring.workspace import open_workspace, save
from stack.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def cohort_windows(targets: int, reports: int, batch: int) -> list[Window]:
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, held_out = frame.iloc[:1200], frame.iloc[1200:]
    rng = np.random.default_rng(0)
    params = load_params(ROOT / "params.yaml")
    out = []
    features = [c for c in held_out.columns if c != "label"]
    brighter = held_out.assign(**{c: held_out[c] + 1.0 for c in features})
    for i in range(targets):
        reference, current = drift.device_frames(
            train,
            as_reports(brighter if i % 2 else held_out, reports, rng),
            batch=batch,
            reference_batches=params.monitoring.reference_batches,
            label_column=params.data.label_column,
        )
        out.append(
            Window(
                f"cohort-{i}", reference, current, math.sqrt(batch), 1, "training split"
            )
        )
    return out


def timed_run(runner: Settings, windows: list[Window], workspace: Path) -> float:
    from prefect import flow

    params = load_params(ROOT / "params.yaml")

    @flow(name="bench-drift-checks", task_runner=task_runner(runner))
    def checks() -> list[bool]:
        futures = [
            check_window.submit(w, params, sequential.Evidence()) for w in windows
        ]
        snapshots = [snapshot_window.submit(w, params) for w in windows]
        ws = open_workspace(workspace)
        for w, snapshot in zip(windows, snapshots, strict=True):
            save(ws, w.target, snapshot.result())
        return [f.result().result.judged for f in futures]

    start = time.perf_counter()
    results = checks()
    elapsed = time.perf_counter() - start
    assert len(results) == len(windows) and all(results)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # offline
    from prefect.testing.utilities import prefect_test_harness

    windows = cohort_windows(args.targets, args.reports, 64)
    runners = {
        "dask, 1 worker": Settings(task_runner="dask", task_workers=1),
        "dask, 2 workers": Settings(task_runner="dask", task_workers=2),
        "threads, 2": Settings(task_runner="threads", task_workers=2),
    }
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(120):
        workspace = Path(tmp) / "evidently"
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, runner in runners.items():
                times[name].append(timed_run(runner, windows, workspace))
    best = {name: min(ts) for name, ts in times.items()}
    for name, seconds in best.items():
        print(f"{name}: {seconds:.1f} s for {args.targets} drift checks")
    base = best["dask, 1 worker"]
    print(
        f"speed-up, dask 2 workers vs 1: {base / best['dask, 2 workers']:.2f}x; "
        f"threads (2) vs dask 1 worker: {base / best['threads, 2']:.2f}x"
    )


if __name__ == "__main__":
    main()
