"""False alarms and detection of the drift check at the default thresholds.

Windows drawn from the reference's own distribution (held-out digits, never seen by
the reference) must not drift; the same windows with a shift must. Measured for
serving windows (rows) and device windows (telemetry batch summaries), and for the
Wasserstein default against Evidently's K-S p-value test on the same windows, at two
window sizes: a p-value test's verdict flips as windows grow, an effect size's
should not.

    .venv/bin/python -m bench.drift_false_alarms [--windows 40]
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from components.config import MonitoringConfig
from monitoring import drift


def windows(
    pool: pd.DataFrame, n: int, size: int, rng: np.random.Generator
) -> list[pd.DataFrame]:
    return [pool.iloc[rng.integers(0, len(pool), size)] for _ in range(n)]


def as_log(rows: pd.DataFrame, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    x = rows.drop(columns="label").to_numpy(np.float64)
    if noise:
        x = x + rng.normal(0, noise, x.shape)
    log = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    log["label"] = rows["label"].to_numpy()
    log["ts"] = np.arange(len(log))
    return log


def as_reports(
    pool: pd.DataFrame, n: int, batch: int, brightness: float, rng: np.random.Generator
) -> list[dict]:
    x_all = pool.drop(columns="label").to_numpy(np.float64)
    y_all = pool["label"].astype(str).to_numpy()
    out = []
    for _ in range(n):
        pick = rng.integers(0, len(pool), batch)
        x = x_all[pick] + brightness
        out.append(
            {
                "inferences": batch,
                "class_counts": pd.Series(y_all[pick]).value_counts().to_dict(),
                "feature_stats": {"mean": list(x.mean(0)), "std": list(x.std(0))},
            }
        )
    return out


def rate(results: list[bool]) -> str:
    return f"{100 * sum(results) / len(results):.1f}% ({sum(results)}/{len(results)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=40)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, held_out = frame.iloc[:1200], frame.iloc[1200:]
    rng = np.random.default_rng(0)
    default = MonitoringConfig()
    ks = default.model_copy(update={"num_method": "ks", "num_threshold": 0.05})

    for name, cfg in (("wasserstein 0.1 (default)", default), ("K-S p<0.05", ks)):
        for size in (100, 500):
            clean, shifted = [], []
            for window in windows(held_out, args.windows, size, rng):
                ref, cur = drift.serving_frames(
                    train, as_log(window, 0.0, rng), size, label_column="label"
                )
                clean.append(drift.check("serving", ref, cur, cfg, min_rows=1).drifted)
                ref, cur = drift.serving_frames(
                    train, as_log(window, 3.0, rng), size, label_column="label"
                )
                shifted.append(
                    drift.check("serving", ref, cur, cfg, min_rows=1).drifted
                )
            print(
                f"serving, {name}, window {size} rows: false alarms {rate(clean)}, "
                f"noise sd 3 detected {rate(shifted)}"
            )
    batch = 64
    for reports in (50, 100):
        clean, shifted = [], []
        for _ in range(args.windows):
            for brightness, out in ((0.0, clean), (1.0, shifted)):
                ref, cur = drift.device_frames(
                    train,
                    as_reports(held_out, reports, batch, brightness, rng),
                    batch=batch,
                    reference_batches=default.reference_batches,
                    label_column="label",
                )
                result = drift.check(
                    "cohort",
                    ref,
                    cur,
                    default,
                    threshold_scale=math.sqrt(batch),
                    min_rows=1,
                )
                out.append(result.drifted)
        print(
            f"device cohort, wasserstein (default), window {reports} reports of "
            f"{batch}: false alarms {rate(clean)}, brightness +1 detected "
            f"{rate(shifted)}"
        )


if __name__ == "__main__":
    main()
