"""A simulated labelling team: labelled rows of a cohort's shifted data, as the
team would send them, arriving in the data set's incoming folder
(`paths.incoming/<data name>/<target>/`) for the next training run; and which cohort
has none yet (`pick_cohort`)."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import pandas as pd

from components.config import Params
from components.data.features import (
    MODEL_SPEC,
    ColumnEncoding,
    fit_encoding,
    model_encoding,
)
from components.data.prepare import labelled_files, raw_batch_path
from components.data.sources import read_table
from components.errors import ServiceError
from edge_fleet.sim.streams import labelled_clips, labelled_rows
from monitoring.reference import ChampionData, reference_rows


def label_incoming(
    project: Path,
    params: Params,
    target: str,
    *,
    drift: str,
    strength: float,
    rows: int,
) -> Path:
    """One batch into `paths.incoming/<data name>/<target>/`; each batch is a new
    draw (its seed in the name), reproducible: the seed follows from the target and
    how many batches it has."""
    folder = project / params.incoming_dir() / target
    batches = len(list(folder.glob("labelled-*.parquet"))) if folder.exists() else 0
    seed = (zlib.crc32(target.encode()) + batches) % 2**31
    if params.data.spoken is not None:
        frame = labelled_clips(
            params.data.spoken,
            strength=strength,
            rows=rows,
            label_column=params.data.label_column,
            seed=seed,
        )
        return _arrived(frame, folder, drift, seed)
    train = with_source_columns(project, params)
    frame = labelled_rows(
        train,
        drift=drift,
        strength=strength,
        rows=rows,
        value_range=params.validation.feature_range,
        label_column=params.data.label_column,
        seed=seed,
        encoding=simulated_encoding(project / params.paths.model, params, train),
        known=known_rows(project, params),
    )
    return _arrived(frame, folder, drift, seed)


def _arrived(frame: pd.DataFrame, folder: Path, drift: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = folder / f"labelled-{drift}-{stamp}-{seed}.parquet"
    frame.to_parquet(path, index=False)
    return path


def with_source_columns(project: Path, params: Params) -> pd.DataFrame:
    """The training split with the source's other columns (those `features.drop`
    leaves out of the model), found by the row's features in the raw rows: an
    incoming file must have exactly the source's columns."""
    train = pd.read_parquet(project / params.paths.prepared / "train.parquet")
    raw = pd.read_parquet(raw_batch_path(project / params.paths.raw, params.data))
    others = [c for c in raw.columns if c not in train.columns]
    if not others:
        return train
    keys = [c for c in train.columns if c in raw.columns]
    found = raw[keys + others].drop_duplicates(subset=keys)
    return train.merge(found, on=keys, how="left")[list(raw.columns)]


def known_rows(project: Path, params: Params) -> pd.DataFrame | None:
    """Every row the data set has (the source and the labelled rows prepared with
    it, and those that arrived since), so that a batch holds none of them: the
    data contract refuses duplicate rows, across the split (two all-gap rows
    moved to the same island were one row twice, and retraining stopped)."""
    raw = raw_batch_path(project / params.paths.raw, params.data)
    incoming = project / params.incoming_dir()
    frames = [read_table(incoming / f) for f in labelled_files(incoming)]
    frames += [pd.read_parquet(raw)] if raw.exists() else []
    return pd.concat(frames, ignore_index=True) if frames else None


def trained_encoding(model_dir: Path) -> list[ColumnEncoding]:
    """The trained model's fitted `features:` encoding ([] for images, or before
    a model is trained)."""
    return model_encoding(model_dir) if (model_dir / MODEL_SPEC).exists() else []


def simulated_encoding(
    model_dir: Path, params: Params, frame: pd.DataFrame
) -> list[ColumnEncoding]:
    """How the simulator drifts the data: a table by column kind (the trained
    model's encoding; for an all-numeric table without a `features:` section,
    every column numeric), images as images ([]). An all-numeric table was
    drifted as images before: noise of 3 on every column, whatever its scale."""
    encoding = trained_encoding(model_dir)
    if encoding or params.data.image_shape is not None:
        return encoding
    label, dropped = params.data.label_column, params.features.drop
    features = [c for c in frame.columns if c != label and c not in dropped]
    return fit_encoding(frame, features, params.features)


def pick_cohort(
    project: Path, params: Params, cohort: str, champion: ChampionData | None
) -> str:
    """`auto`: the first cohort whose champion has none of its own labelled rows yet
    (its reference is still the training split, so a shift on it is drift)."""
    if cohort != "auto":
        if cohort not in params.fleet.cohorts:
            raise ServiceError(
                f"--cohort {cohort!r}: not one of fleet.cohorts {params.fleet.cohorts}"
            )
        return cohort
    for name in params.fleet.cohorts:
        if reference_rows(project, params, f"cohort-{name}", champion) is None:
            return name
    raise ServiceError(
        f"--cohort auto: every cohort of fleet.cohorts {params.fleet.cohorts} already "
        f"has its own labelled rows in v{champion.version if champion else '-'}'s "
        "data, so the same shift on it is no longer drift",
        hint=f"name one with --cohort, or move {params.incoming_dir()}/cohort-*/ "
        "away to return to the embedded default data",
    )
