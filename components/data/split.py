"""Stratified, deterministic train/val/test splits with a leakage key per row."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from components.config import SplitConfig
from components.errors import DataContractError

ROW_KEY = "_row_key"


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


def split_dataset(frame: pd.DataFrame, cfg: SplitConfig, label: str) -> SplitResult:
    """Split stratified by label; the same frame and seed give the same split."""
    counts = frame[label].value_counts()
    if counts.min() < 3:
        raise DataContractError(
            f"label {counts.idxmin()} has {counts.min()} row(s); a stratified "
            "train/val/test split needs at least 3 per class"
        )
    rest, test = train_test_split(
        frame, test_size=cfg.test, random_state=cfg.seed, stratify=frame[label]
    )
    train, val = train_test_split(
        rest,
        test_size=cfg.val / (1 - cfg.test),
        random_state=cfg.seed,
        stratify=rest[label],
    )
    return SplitResult(
        train=train.sort_index(), val=val.sort_index(), test=test.sort_index()
    )
