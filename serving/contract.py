"""What a request's rows must be for one model version, checked on the whole request
at once (numpy), before the rows join a batch: a bad request is refused with a 400
that names its row, column, value and the setting, and never fails good ones."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from bentoml.exceptions import InvalidArgument


@dataclass(frozen=True)
class FeatureRanges:
    """The data contract a version was trained under (its run's params), per input
    position: the allowed [low, high] (validation.column_ranges for a named
    column, else validation.feature_range; unbounded where neither names one), the
    setting that says so, and the column's name where the run names its columns."""

    low: list[float]
    high: list[float]
    setting: list[str]
    names: list[str] | None

    @classmethod
    def of_run(cls, params: dict[str, str], n_features: int) -> FeatureRanges:
        default = json.loads(params.get("validation.feature_range", "null"))
        lo, hi = default if default is not None else (-math.inf, math.inf)
        low, high = [float(lo)] * n_features, [float(hi)] * n_features
        setting = ["validation.feature_range"] * n_features
        names = json.loads(params.get("validation.feature_columns", "null"))
        names = names if names and len(names) == n_features else None
        prefix = "validation.column_ranges."
        for key, value in params.items():
            column = key.removeprefix(prefix)
            if key.startswith(prefix) and names and column in names:
                i = names.index(column)
                low[i], high[i] = (float(v) for v in json.loads(value))
                setting[i] = key
        return cls(low, high, setting, names)


@dataclass(frozen=True)
class RowContract:
    """What a request's rows must be for one model version: its feature count, and
    each value finite in float32 (the dtype the model runs in) and within the data
    contract's range for its column."""

    version: str
    n_features: int
    ranges: FeatureRanges

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The ranges as float32 arrays, made once per contract (not per request)."""
        return (
            np.asarray(self.ranges.low, dtype=np.float32),
            np.asarray(self.ranges.high, dtype=np.float32),
        )

    def check(self, instances: list[list[float]]) -> np.ndarray:
        """The rows as the model's float32 input; InvalidArgument (400) naming the
        first row and column that break the contract."""
        try:
            with np.errstate(over="ignore"):  # past float32: inf, refused below
                rows = np.asarray(instances, dtype=np.float64).astype(np.float32)
        except ValueError:  # ragged rows
            rows = None
        if rows is None or rows.ndim != 2 or rows.shape[1] != self.n_features:
            i, width = next(
                (i, len(row))
                for i, row in enumerate(instances)
                if len(row) != self.n_features
            )
            raise InvalidArgument(
                f"instances[{i}]: expected {self.n_features} features, got {width}"
            )
        low, high = self.bounds
        bad = ~np.isfinite(rows) | (rows < low) | (rows > high)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise InvalidArgument(self.why(i, j, instances[i][j]))
        return rows

    def why(self, i: int, j: int, value: float) -> str:
        column = f" ({self.ranges.names[j]})" if self.ranges.names else ""
        where = f"instances[{i}][{j}]{column}"
        if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
            return f"{where}: {value!r} is not a finite float32"
        return (
            f"{where}: {value!r} is outside [{self.ranges.low[j]:g}, "
            f"{self.ranges.high[j]:g}] ({self.ranges.setting[j]})"
        )
