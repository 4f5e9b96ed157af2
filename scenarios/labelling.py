"""A simulated labelling team: labelled rows of a cohort's shifted data, as the
team would send them, arriving in `paths.incoming/<target>/` for the next training
run."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import pandas as pd

from components.config import Params
from edge_fleet.simulator import labelled_rows


def label_incoming(
    project: Path,
    params: Params,
    target: str,
    *,
    drift: str,
    strength: float,
    rows: int,
) -> Path:
    """One batch into `paths.incoming/<target>/`; each batch is a new draw (its seed
    in the name), reproducible: the seed follows from the target and how many
    batches it has."""
    folder = project / params.paths.incoming / target
    batches = len(list(folder.glob("labelled-*.parquet"))) if folder.exists() else 0
    seed = (zlib.crc32(target.encode()) + batches) % 2**31
    frame = labelled_rows(
        pd.read_parquet(project / params.paths.prepared / "train.parquet"),
        drift=drift,
        strength=strength,
        rows=rows,
        value_range=params.validation.feature_range,
        label_column=params.data.label_column,
        seed=seed,
    )
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = folder / f"labelled-{drift}-{stamp}-{seed}.parquet"
    frame.to_parquet(path, index=False)
    return path
