"""Today's drift rule against the sequential test, on the same simulated streams.

A simulated cohort: 10 devices, each reporting once an hour the summary of a batch
of 64 inferences (7,200 reports a month); the monitor passes every hour (10 new
reports). The reports summarise digits the reference never saw (the held-out
rows); the reference is the training rows' batch summaries, as the monitor builds
it. A report's class shares are its rows' labels (a model's predictions would move
with a drift too: the streams understate it).

- **the rule before issue 36**: at each pass the last 100 reports, each column's
  normed Wasserstein distance against 0.1 x sqrt(64), the window drifting at 30% of
  its columns and with 2 devices' own reports drifting; retraining after 2 drifting
  windows in a row (the verdicts as Evidently computes them: `drift.check`
  without its report, equal to it in tests/monitoring/test_drift.py).
- **the sequential test** (monitoring/sequential.py): the e-detector over every new
  report, alarming at a month's reports / `monitoring.false_alarm_level`; the
  window's e-value through e-BH across the cohorts checked at the pass; 2 devices'
  own reports drifting, as above.

Printed side by side:
1. false alarms per cohort-month without drift; and a month of serving's
   predictions, where today's rule judged windows of 100 rows (a
   `serving_min_rows` that small);
2. 1,000 cohorts over a day (24 passes), 50 of them drifting (the loop's noise):
   the false discovery rate of the cohorts flagged at a pass, the share of
   quiet cohorts ever flagged, and the drifting ones found;
3. the detection delay (reports from the drift's start until retraining) for
   drifts of several sizes, after 200 quiet reports.

    .venv/bin/python -m bench.drift_false_alarms [--months 2] [--sequential-months 50]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from components.config import MonitoringConfig, load_params
from edge_fleet.sim.streams import shift
from monitoring import drift, sequential

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
DEVICES = 10
HOUR = 3600.0
WINDOW = 100
VALUE_RANGE = (0.0, 16.0)  # what a digits sensor reports (the data contract's range)
MONTH = 720  # passes: hourly for 30 days


@dataclass
class Cohort:
    """One cohort's report stream and both rules' state."""

    x: np.ndarray  # the pool its devices draw from
    y: np.ndarray
    rng: np.random.Generator
    drift: tuple[str, float] | None = None
    reports: list[pd.DataFrame] = field(default_factory=list)
    sent: int = 0
    streak: int = 0  # today's rule: drifting windows in a row
    evidence: sequential.Evidence = field(default_factory=sequential.Evidence)


@dataclass(frozen=True)
class Setup:
    cfg: MonitoringConfig
    prepared: drift.DeviceReference
    reference: pd.DataFrame
    null: sequential.Null
    columns: list[str]
    classes: list[str]


def setup(train: pd.DataFrame, cfg: MonitoringConfig, batches: int) -> Setup:
    prepared = drift.device_reference(
        train, batch=BATCH, reference_batches=batches, label_column="label"
    )
    return Setup(
        cfg,
        prepared,
        prepared.frame,
        sequential.Null.of(prepared.frame, []),
        list(prepared.frame.columns),
        prepared.classes,
    )


def next_reports(cohort: Cohort, s: Setup, n: int, hour: float) -> pd.DataFrame:
    """`n` new reports, one per device in turn, spread over the hour."""
    pick = cohort.rng.integers(0, len(cohort.x), (n, BATCH))
    rows = cohort.x[pick].reshape(n * BATCH, -1)
    if cohort.drift is not None:
        kind, strength = cohort.drift
        rows = np.clip(shift(rows, kind, strength, cohort.rng), *VALUE_RANGE)
    rows = rows.reshape(n, BATCH, -1).astype(np.float64)
    codes = {k: i for i, k in enumerate(s.classes)}
    labels = np.vectorize(codes.get)(cohort.y[pick])
    shares = np.stack(
        [np.bincount(row, minlength=len(s.classes)) / BATCH for row in labels]
    )
    values = np.hstack([rows.mean(axis=1), rows.std(axis=1), shares])
    ids = np.arange(cohort.sent + 1, cohort.sent + n + 1)
    index = pd.MultiIndex.from_arrays(
        [
            [f"d{i % DEVICES}" for i in ids],
            ids,
            hour * HOUR + (np.arange(n) + 1) * HOUR / n,
        ],
        names=[drift.DEVICE, drift.REPORT, drift.ARRIVED],
    )
    cohort.sent += n
    frame = pd.DataFrame(values, columns=s.columns, index=index)
    cohort.reports = [*cohort.reports, frame][-WINDOW:]
    return frame


def window(cohort: Cohort) -> pd.DataFrame:
    return pd.concat(cohort.reports).tail(WINDOW)


def window_check(cohort: Cohort, s: Setup) -> drift.DriftResult:
    return drift.check(
        "cohort",
        s.reference,
        window(cohort),
        s.cfg,
        threshold_scale=math.sqrt(BATCH),
        min_rows=s.cfg.device_min_reports,
        by_device=True,
        snapshot=False,
    )


def today(cohort: Cohort, s: Setup) -> bool:
    """The rule before issue 36, at one pass: True when it retrains."""
    drifted = window_check(cohort, s).drifted
    cohort.streak = cohort.streak + 1 if drifted else 0
    if cohort.streak >= 2:
        cohort.streak = 0
        return True
    return False


def bet(cohort: Cohort, s: Setup, new: pd.DataFrame) -> None:
    evidence = cohort.evidence
    sequential.observe(
        evidence, s.null, new, s.cfg, scale=math.sqrt(BATCH), window=WINDOW
    )
    times = new.index.get_level_values(drift.ARRIVED)
    evidence.first_at = evidence.first_at or float(times.min())
    evidence.last_at = float(times.max())


def alarmed(cohort: Cohort, s: Setup) -> bool:
    evidence = cohort.evidence
    return evidence.statistic >= sequential.threshold(evidence, s.cfg, 7200.0)


def voted(cohort: Cohort, s: Setup) -> bool:
    return (window_check(cohort, s).devices_drifted or 0) >= s.cfg.min_devices


def new_rule(cohort: Cohort, s: Setup) -> bool:
    """The sequential test of one cohort checked alone (e-BH over 1), at a pass."""
    evalue = cohort.evidence.evalue() if alarmed(cohort, s) else 0.0
    if sequential.ebh({"c": evalue}, s.cfg.false_alarm_level) and voted(cohort, s):
        cohort.evidence.restart()
        return True
    return False


def false_alarms(pools, s: Setup, months: int, rules: dict) -> dict[str, float]:
    """Alarms per cohort-month without drift, per rule."""
    x, y = pools
    counts = dict.fromkeys(rules, 0)
    for month in range(months):
        cohort = Cohort(x, y, np.random.default_rng(1000 + month))
        for hour in range(MONTH):
            new = next_reports(cohort, s, DEVICES, hour)
            bet(cohort, s, new)
            if hour < WINDOW // DEVICES:
                continue  # the window fills
            for name, rule in rules.items():
                counts[name] += rule(cohort, s)
    return {name: n / months for name, n in counts.items()}


def serving_month(
    train: pd.DataFrame, held_out: pd.DataFrame, cfg: MonitoringConfig, rows: int
) -> dict[str, int]:
    """A month of serving without drift, `rows` predictions an hour, a pass an
    hour: alarms of today's rule on windows of the last `rows` (a user's
    `serving_min_rows` that small) and of the sequential test on every row."""
    rng = np.random.default_rng(7)
    x = held_out.drop(columns="label")
    x = pd.DataFrame(x.to_numpy(), columns=[f"f{i}" for i in range(x.shape[1])])
    empty = pd.DataFrame(columns=[*x.columns, "label", "ts"])
    reference, _ = drift.serving_frames(train, empty, rows, label_column="label")
    null = sequential.Null.of(reference, [drift.PREDICTION])
    evidence = sequential.Evidence(first_at=0.0)
    alarms = {"today": 0, "new": 0}
    streak = 0
    for hour in range(MONTH):
        pick = rng.integers(0, len(held_out), rows)
        log = x.iloc[pick].reset_index(drop=True)
        log["label"] = held_out["label"].to_numpy()[pick]
        log["ts"] = hour * HOUR + np.arange(rows) * HOUR / rows
        _, current = drift.serving_frames(train, log, rows, label_column="label")
        drifted = drift.check(
            "serving", reference, current, cfg, min_rows=rows, snapshot=False
        ).drifted
        streak = streak + 1 if drifted else 0
        if streak >= 2:
            alarms["today"], streak = alarms["today"] + 1, 0
        sequential.observe(evidence, null, current, cfg, window=rows)
        evidence.last_at = float(log["ts"].max())
        limit = sequential.threshold(evidence, cfg, 72000.0)
        if (
            evidence.statistic >= limit
            and evidence.evalue() >= 1 / cfg.false_alarm_level
        ):
            alarms["new"] += 1
            evidence.restart()
    return alarms


def many_cohorts(pools, s: Setup, cohorts: int, drifting: int) -> dict[str, str]:
    """A day of `cohorts` cohorts, the first `drifting` given the loop's noise."""
    x, y = pools
    group = [
        Cohort(x, y, np.random.default_rng(i), ("noise", 3.0) if i < drifting else None)
        for i in range(cohorts)
    ]
    proportions, ever, found = [], set(), set()
    for hour in range(24):
        for c in group:
            bet(c, s, next_reports(c, s, DEVICES, hour))
        if hour < WINDOW // DEVICES:
            continue
        evalues = {
            i: (c.evidence.evalue() if alarmed(c, s) else 0.0)
            for i, c in enumerate(group)
        }
        flagged = {
            i
            for i in sequential.ebh(evalues, s.cfg.false_alarm_level)
            if voted(group[i], s)
        }
        false = {i for i in flagged if i >= drifting}
        proportions.append(len(false) / max(len(flagged), 1))
        ever |= false
        found |= flagged - false
    # Today's rule at the day's last two passes (its windows in a row).
    before = [window_check(c, s).drifted for c in group]
    for c in group:
        next_reports(c, s, DEVICES, 24)
    after = [window_check(c, s).drifted for c in group]
    old = {i for i in range(cohorts) if before[i] and after[i]}
    old_false = {i for i in old if i >= drifting}
    quiet = cohorts - drifting
    return {
        "new": (
            f"FDR {np.mean(proportions):.3f} over {len(proportions)} passes; quiet "
            f"cohorts ever flagged {len(ever)}/{quiet}; drifting found "
            f"{len(found)}/{drifting}"
        ),
        "today": (
            f"at the last pass: false discovery proportion "
            f"{len(old_false) / max(len(old), 1):.3f}; quiet cohorts flagged "
            f"{len(old_false)}/{quiet}; drifting found "
            f"{len(old - old_false)}/{drifting}"
        ),
    }


def delays(pools, s: Setup, kind: str, strength: float, streams: int) -> dict:
    """Reports from the drift's start until each rule retrains (median)."""
    x, y = pools
    out: dict[str, list[float]] = {"today": [], "new": []}
    for n in range(streams):
        cohort = Cohort(x, y, np.random.default_rng(500 + n))
        for hour in range(20):  # 200 quiet reports
            bet(cohort, s, next_reports(cohort, s, DEVICES, hour))
        today(cohort, s)  # the last quiet window (a streak may have begun)
        cohort.drift = (kind, strength)
        done: dict[str, float] = {}
        for hour in range(20, 80):
            bet(cohort, s, next_reports(cohort, s, DEVICES, hour))
            reports = (hour - 19) * DEVICES
            if "today" not in done and today(cohort, s):
                done["today"] = reports
            if "new" not in done and new_rule(cohort, s):
                done["new"] = reports
            if len(done) == 2:
                break
        for name, found in out.items():
            found.append(done.get(name, math.inf))
    return {name: float(np.median(v)) for name, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--months", type=int, default=2)  # today's rule: 22 s each
    parser.add_argument("--sequential-months", type=int, default=50)
    parser.add_argument("--cohorts", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    cfg = load_params(ROOT / "params.yaml").monitoring
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, held_out = frame.iloc[:1200], frame.iloc[1200:]
    s = setup(train, cfg, cfg.reference_batches)
    pools = (
        held_out.drop(columns="label").to_numpy(np.float32),
        held_out["label"].astype(str).to_numpy(),
    )
    print(
        f"monitoring: false_alarm_level {cfg.false_alarm_level}, min_effect "
        f"{cfg.min_effect}; 10 devices, hourly reports of {BATCH} inferences"
    )
    t0 = time.perf_counter()
    both = false_alarms(pools, s, args.months, {"today": today, "new": new_rule})
    more = false_alarms(pools, s, args.sequential_months, {"new": new_rule})
    print(
        f"1. false alarms per cohort-month, no drift: today's rule "
        f"{both['today']:.2f} ({args.months} months), the sequential test "
        f"{both['new']:.2f} on the same streams, {more['new']:.3f} over "
        f"{args.sequential_months} months (level {cfg.false_alarm_level}) "
        f"[{time.perf_counter() - t0:.0f} s]"
    )
    t0 = time.perf_counter()
    serving = serving_month(train, held_out, cfg, 100)
    print(
        f"1b. serving, a month of 100 predictions an hour, no drift: today's rule "
        f"on 100-row windows {serving['today']} false alarms, the sequential test "
        f"on every row {serving['new']} [{time.perf_counter() - t0:.0f} s]"
    )
    t0 = time.perf_counter()
    day = many_cohorts(pools, s, args.cohorts, args.cohorts // 20)
    print(
        f"2. {args.cohorts} cohorts for a day, {args.cohorts // 20} drifting: "
        f"the sequential test: {day['new']}; today's rule: {day['today']} "
        f"[{time.perf_counter() - t0:.0f} s]"
    )
    print("3. detection delay, reports after the drift starts (median):")
    for kind, strength in (
        ("noise", 3.0),
        ("noise", 1.0),
        ("noise", 0.5),
        ("brightness", 2.0),
        ("brightness", 0.5),
    ):
        d = delays(pools, s, kind, strength, args.streams)
        loop = " (the loop's)" if (kind, strength) == ("noise", 3.0) else ""
        print(
            f"   {kind} {strength:g}{loop}: today's rule {d['today']:.0f}, "
            f"the sequential test {d['new']:.0f}"
        )


if __name__ == "__main__":
    main()
