"""What each deployment target is measured against, and its delayed labels.

Labelled rows arrive in the data set's incoming folder (`paths.incoming/<data
name>/`), in a subfolder per deployment target when they came from one (`serving/`,
`cohort-<name>/`); the next training run adds them to
the data (components/data/prepare.py) and the data card lists them.

- **Reference.** A target's drift is measured against what its champion was trained
  on for that target: the target's own labelled rows in the champion's data version
  (its data card, logged with its MLflow run: `ChampionData`, which the monitor
  flow reads from the registry), once there are at least
  `monitoring.target_reference_min_rows`; before that, the champion's training
  split without the rows that came from other targets' folders. So after a
  retraining on a drifted cohort's labels the cohort is measured against what the
  model now knows and its drift share falls back (the recovery on the dashboard),
  a cohort that moves away from that again drifts again, and the quiet cohorts are
  not measured against the drifted cohort's rows.
- **Delayed labels.** A target's labelled rows that are not in the champion's data
  yet are the champion's performance on that target now: its accuracy on them is
  checked next to data drift (`drift.performance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.config import Params
from components.data.prepare import labelled_files
from components.data.sources import read_table


@dataclass(frozen=True)
class ChampionData:
    version: str
    incoming_files: frozenset[str]  # paths in the incoming folder it was trained on


def target_files(project: Path, params: Params, target: str) -> list[str]:
    """The labelled files of one target, as paths in the incoming folder."""
    folder = project / params.incoming_dir() / target
    return [f"{target}/{name}" for name in labelled_files(folder)]


def _rows(project: Path, params: Params, files: list[str]) -> pd.DataFrame | None:
    if not files:
        return None
    root = project / params.incoming_dir()
    return pd.concat([read_table(root / f) for f in files], ignore_index=True)


def reference_rows(
    project: Path, params: Params, target: str, champion: ChampionData | None
) -> pd.DataFrame | None:
    """The target's own labelled rows the champion was trained on, when there are
    enough of them to stand as its reference; otherwise None (the training split)."""
    if champion is None:
        return None
    files = [
        f for f in target_files(project, params, target) if f in champion.incoming_files
    ]
    rows = _rows(project, params, files)
    if rows is None or len(rows) < params.monitoring.target_reference_min_rows:
        return None
    return rows


def general_rows(
    project: Path, params: Params, train: pd.DataFrame, champion: ChampionData | None
) -> pd.DataFrame:
    """The training split without the rows that came from one target's folder: the
    reference of the targets that have none of their own. (A cohort's noisy labelled
    rows are in the training data once retrained on; a quiet cohort is not measured
    against them.)"""
    if champion is None:
        return train
    root = project / params.incoming_dir()
    files = [f for f in sorted(champion.incoming_files) if "/" in f]
    rows = _rows(project, params, [f for f in files if (root / f).is_file()])
    if rows is None:
        return train
    columns = list(train.columns)

    def keys(frame: pd.DataFrame) -> pd.Series:
        return pd.util.hash_pandas_object(frame[columns].round(6), index=False)

    return train[~keys(train).isin(set(keys(rows))).to_numpy()]


def delayed_labels(
    project: Path, params: Params, target: str, champion: ChampionData | None
) -> pd.DataFrame | None:
    """The target's labelled rows the champion has not been trained on (None below
    `monitoring.delayed_labels_min_rows`)."""
    if champion is None:
        return None
    files = [
        f
        for f in target_files(project, params, target)
        if f not in champion.incoming_files
    ]
    rows = _rows(project, params, files)
    if rows is None or len(rows) < params.monitoring.delayed_labels_min_rows:
        return None
    return rows
