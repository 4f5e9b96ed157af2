"""Loading a data source named in params: a scikit-learn data set or a local file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn import datasets

from components.config import DataConfig
from components.errors import ConfigError


@dataclass(frozen=True)
class SourceData:
    frame: pd.DataFrame
    description: str


def load_source(cfg: DataConfig, root: Path = Path(".")) -> SourceData:
    """The configured source as one frame: feature columns plus the label column."""
    if cfg.source.startswith("sklearn:"):
        return _load_sklearn(cfg)
    if cfg.spoken is not None:
        from components.data import speech  # espeak-ng and scipy: only when speaking

        frame = speech.speech_frame(cfg.spoken, cfg.label_column)
        return SourceData(frame=frame, description=speech.description(cfg.spoken))
    return _load_file(cfg, root / cfg.source)


def _load_sklearn(cfg: DataConfig) -> SourceData:
    name = cfg.source.split(":", 1)[1]
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.rename(columns={"target": cfg.label_column})
    frame[cfg.label_column] = frame[cfg.label_column].astype("int64")
    # The first paragraph of the bundled description names the set and its origin.
    summary = bunch.DESCR.strip().split("\n\n")[0:2]
    return SourceData(frame=frame, description="\n\n".join(summary))


def _load_file(cfg: DataConfig, path: Path) -> SourceData:
    if not path.is_file():
        raise ConfigError(
            f"data.source: file {str(path)!r} does not exist",
            hint="give a .csv or .parquet path relative to the project root",
        )
    frame = read_table(path)
    if cfg.label_column not in frame.columns:
        raise ConfigError(
            f"data.label_column: column {cfg.label_column!r} not in {path}; "
            f"columns are {list(frame.columns)[:10]}"
        )
    return SourceData(frame=frame, description=cfg.description or f"file {path}")


def read_table(path: Path) -> pd.DataFrame:
    """Read a .csv or .parquet file as a frame."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from None
    raise ConfigError(f"{path}: expected a .csv or .parquet file, got {suffix!r}")


def feature_columns(frame: pd.DataFrame, label_column: str) -> list[str]:
    return [c for c in frame.columns if c != label_column]
