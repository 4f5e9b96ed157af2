"""The `features:` section fitted on the training split: per raw column its kind,
its categories (declared, or learned from the training rows) and the value that
fills its gaps. `encode` turns raw rows into what the exported model takes, one
float per raw column in order: numbers as they are, booleans as 0/1, categories
as their index in the column's list, dates as minutes since the column's origin
(components/data/dates.py), and NaN for a gap or an unseen category; the model
itself imputes, adds the "was missing" indicators, one-hot encodes and takes the
dates' calendar parts (components/training/model.py `Preprocess`), so serving,
devices and monitoring see the raw columns."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import FeaturesConfig, FeatureSpec
from components.data import dates
from components.errors import ConfigError

MODEL_SPEC = "model.json"  # beside a trained model's weights: its spec and encoding
TRUE = {"true", "yes", "1", "1.0", "t", "y"}
FALSE = {"false", "no", "0", "0.0", "f", "n"}


@dataclass(frozen=True)
class ColumnEncoding:
    name: str
    kind: str
    categories: list[str] | None  # categorical: index i stands for categories[i]
    fill: float  # in the encoded space (a category's index); NaN: no gap allowed
    indicator: bool
    parts: list[str] | None = None  # datetime: the calendar parts the model uses
    origin: int | None = None  # datetime: day (from 1970-01-01) minutes count from

    @property
    def width(self) -> int:
        """Inputs this column gives the network after the model's preprocessing."""
        if self.parts is not None:
            body = len(self.parts)
        elif self.categories is not None:
            body = len(self.categories)
        else:
            body = 1
        return body + int(self.indicator)


def fit_encoding(
    frame: pd.DataFrame, features: list[str], cfg: FeaturesConfig
) -> list[ColumnEncoding]:
    """Each feature column's encoding, fitted on `frame` (the training split)."""
    return [_fit_column(frame[name], name, cfg.spec(name)) for name in features]


def _fit_column(values: pd.Series, name: str, spec: FeatureSpec) -> ColumnEncoding:
    categories = None
    if spec.kind == "categorical":
        declared = spec.values != "learned"
        seen = values.dropna().astype(str)
        categories = (
            [str(v) for v in spec.values] if declared else sorted(seen.unique())
        )
        if not categories:
            raise ConfigError(f"features.columns.{name}: no category in the data")
    dated = spec.kind == "datetime"
    column = ColumnEncoding(
        name,
        spec.kind,
        categories,
        float("nan"),
        spec.indicator,
        parts=list(spec.parts) if dated and spec.parts else None,
        origin=dates.origin_day(values) if dated else None,
    )
    encoded = encode_column(values, column)
    if spec.missing == "refuse":
        return column
    present = encoded[~np.isnan(encoded)]
    if spec.missing == "constant":
        fill = encode_column(pd.Series([spec.fill]), column)[0]
        if np.isnan(fill):
            raise ConfigError(
                f"features.columns.{name}.fill: {spec.fill!r} is not one of "
                f"{categories}"
            )
    elif not present.size:
        raise ConfigError(f"features.columns.{name}: every training value is missing")
    elif spec.missing == "median":
        fill = float(np.median(present))
    else:  # most_frequent; ties: the smallest
        uniques, counts = np.unique(present, return_counts=True)
        fill = float(uniques[np.argmax(counts)])
    return replace(column, fill=float(fill))


def encode_column(values: pd.Series, column: ColumnEncoding) -> np.ndarray:
    """One raw column as the model's float32 input (NaN: a gap or unseen value)."""
    if column.kind == "categorical":
        assert column.categories is not None
        index = {c: float(i) for i, c in enumerate(column.categories)}
        text = values.map(lambda v: None if _missing(v) else _category_text(v))
        return text.map(lambda v: index.get(v, np.nan)).to_numpy(np.float32)
    if column.kind == "boolean":
        return values.map(_boolean).to_numpy(np.float32)
    if column.kind == "datetime":
        assert column.origin is not None
        return dates.minutes_since(values, column.origin)
    return pd.to_numeric(values, errors="coerce").to_numpy(np.float32)


def encode(frame: pd.DataFrame, encoding: list[ColumnEncoding]) -> np.ndarray:
    """Raw rows (named columns) as the model's input matrix."""
    if not encoding:
        return np.empty((len(frame), 0), dtype=np.float32)
    return np.stack([encode_column(frame[c.name], c) for c in encoding], axis=1)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _category_text(value: object) -> str:
    """1 and 1.0 (a CSV column with a gap turns to floats) name the same category."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _boolean(value: object) -> float:
    if _missing(value):
        return np.nan
    text = _category_text(value).strip().lower()
    return 1.0 if text in TRUE else 0.0 if text in FALSE else np.nan


def encoding_to_json(encoding: list[ColumnEncoding]) -> list[dict]:
    return [
        asdict(c) | {"fill": None if np.isnan(c.fill) else c.fill} for c in encoding
    ]


def encoding_from_json(raw: list[dict] | None) -> list[ColumnEncoding]:
    return [
        ColumnEncoding(**(c | {"fill": np.nan if c["fill"] is None else c["fill"]}))
        for c in raw or []
    ]


def model_encoding(model_dir: Path) -> list[ColumnEncoding]:
    """The encoding a trained model was fitted with ([] for a plain model)."""
    spec = json.loads((model_dir / MODEL_SPEC).read_text())
    return encoding_from_json(spec.get("encoding"))


def model_input(
    frame: pd.DataFrame, features: list[str], encoding: list[ColumnEncoding]
) -> np.ndarray:
    """Raw rows as a model takes them: encoded with its fitted `encoding`, or, for
    a model without one, its feature columns as they are."""
    if encoding:
        return encode(frame, encoding)
    return frame[features].to_numpy(np.float32)
