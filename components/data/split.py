"""Deterministic train/val/test splits, stable as rows are added, with a leakage
key per row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.config import SplitConfig
from components.errors import DataContractError

ROW_KEY = "_row_key"
TRAIN, VAL, TEST = "train", "val", "test"


@dataclass(frozen=True)
class SplitResult:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def row_keys(frame: pd.DataFrame, feature_columns: list[str]) -> pd.Series:
    """A content hash of each row's features: equal features, equal key."""
    return pd.util.hash_pandas_object(frame[feature_columns], index=False).astype(
        "int64"
    )


def split_keys(
    frame: pd.DataFrame, cfg: SplitConfig, features: list[str]
) -> np.ndarray:
    """What decides a row's split: its features' hash, or with
    `split.group_column` its group's (a speaker's clips go to one split)."""
    if cfg.group_column is None:
        return row_keys(frame, features).to_numpy()
    if cfg.group_column not in frame.columns:
        raise DataContractError(
            f"split.group_column: column {cfg.group_column!r} not in the data; "
            f"columns are {list(frame.columns)[:8]}"
        )
    groups = frame[cfg.group_column].astype(str).to_numpy(dtype=object)
    return pd.util.hash_array(groups).astype("int64")


def split_dataset(
    frame: pd.DataFrame,
    cfg: SplitConfig,
    label: str,
    features: list[str] | None = None,
) -> SplitResult:
    """Each row's split drawn from a seeded hash of its features, so a row stays in
    its split when rows are added (the next data version's test rows are the old
    test rows plus new ones: a champion is never scored on rows it trained on),
    and rows with equal features share a split (no leak); with
    `split.group_column`, every row of a group (a speaker) shares one. Shares are the
    configured ones in expectation, per class; a class that drew no row for val
    or test (or train) gets the row nearest to it from the split with the most."""
    features = features or [c for c in frame.columns if c != label]
    counts = frame[label].value_counts()
    if counts.min() < 3:
        raise DataContractError(
            f"label {counts.idxmin()} has {counts.min()} row(s); a split into "
            "train, val and test needs at least 3 per class"
        )
    keys = split_keys(frame, cfg, features)
    # pandas mixes a hash key into text only: each row's key as text, with the seed
    salted = pd.util.hash_array(
        keys.astype(str).astype(object), hash_key=_hash_key(cfg)
    )
    draw = salted / np.float64(2**64)
    part = np.select(
        [draw < cfg.test, draw < cfg.test + cfg.val], [TEST, VAL], default=TRAIN
    )
    labels = frame[label].to_numpy()
    held_out = cfg.test + cfg.val
    bounds = {TEST: (0.0, cfg.test), VAL: (cfg.test, held_out), TRAIN: (held_out, 1.0)}
    for value in counts.index:
        mine = labels == value
        for name, (low, high) in bounds.items():
            if (part[mine] == name).any():
                continue
            donors = sorted(
                (mine & (part == donor) for donor in bounds if donor != name),
                key=lambda rows: len(np.unique(keys[rows])),
                reverse=True,
            )
            donors = [rows for rows in donors if len(np.unique(keys[rows])) > 1]
            if not donors:
                raise DataContractError(
                    f"label {value}: too few distinct rows to give the {name} split "
                    "one (rows with equal features share a split)"
                )
            rows = donors[0]  # the split with the most of the class's rows
            distance = np.maximum(low - draw[rows], draw[rows] - high)
            part[keys == keys[rows][np.argmin(distance)]] = name
    return SplitResult(
        train=frame[part == TRAIN], val=frame[part == VAL], test=frame[part == TEST]
    )


def _hash_key(cfg: SplitConfig) -> str:
    """The split's seed as pandas' 16-character hash key."""
    return f"edgeloop{cfg.seed:08d}"[-16:]
