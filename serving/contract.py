"""What a request's rows must be for one model version, checked on the whole request
at once (numpy), before the rows join a batch: a bad request is refused with a 400
that names its row, column, value and the setting, and never fails good ones."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from bentoml.exceptions import InvalidArgument

from components.data.features import ColumnEncoding, encode


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
    def of_run(
        cls,
        params: dict[str, str],
        n_features: int,
        columns: list[str] | None = None,
    ) -> FeatureRanges:
        default = json.loads(params.get("validation.feature_range", "null"))
        lo, hi = default if default is not None else (-math.inf, math.inf)
        low, high = [float(lo)] * n_features, [float(hi)] * n_features
        setting = ["validation.feature_range"] * n_features
        names = columns or json.loads(params.get("validation.feature_columns", "null"))
        names = names if names and len(names) == n_features else None
        prefix = "validation.column_ranges."
        for key, value in params.items():
            column = key.removeprefix(prefix)
            if key.startswith(prefix) and names and column in names:
                i = names.index(column)
                low[i], high[i] = (float(v) for v in json.loads(value))
                setting[i] = key
        return cls(low, high, setting, names)


NOT_A = {  # what a raw value of a feature kind must be, as a refusal says it
    "boolean": "a boolean (true/false, 1/0, yes/no)",
    "datetime": "a date (ISO 8601: 2024-01-31T12:00)",
}


@dataclass(frozen=True)
class RowContract:
    """What a request's rows must be for one model version: its feature count, and
    each value finite in float32 (the dtype the model runs in) and within the data
    contract's range for its column."""

    version: str
    n_features: int
    ranges: FeatureRanges
    # The model's fitted `features:` section: rows may then carry text (a
    # category) and null (a gap, where the column's policy fills it).
    encoding: tuple[ColumnEncoding, ...] = ()

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The ranges as float32 arrays, made once per contract (not per request)."""
        return (
            np.asarray(self.ranges.low, dtype=np.float32),
            np.asarray(self.ranges.high, dtype=np.float32),
        )

    def check(self, instances: list[list[float | str | None]]) -> np.ndarray:
        """The rows as the model's float32 input; InvalidArgument (400) naming the
        first row and column that break the contract."""
        if self.encoding:
            return self.check_raw(instances)
        try:
            with np.errstate(over="ignore"):  # past float32: inf, refused below
                rows = np.asarray(instances, dtype=np.float64).astype(np.float32)
        except ValueError:  # ragged rows, or text that is not a number
            rows = None
        if rows is None or rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise InvalidArgument(self.why_not_numbers(instances))
        low, high = self.bounds
        bad = ~np.isfinite(rows) | (rows < low) | (rows > high)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise InvalidArgument(self.why(i, j, instances[i][j]))
        return rows

    def check_raw(self, instances: list[list[float | str | None]]) -> np.ndarray:
        """Rows of raw values (text for a category, null for a gap) encoded as the
        model takes them: an unseen category, text in a numeric column, or a gap
        in a column whose policy is refuse is a 400 naming the value."""
        for i, row in enumerate(instances):
            if len(row) != self.n_features:
                raise InvalidArgument(
                    f"instances[{i}]: expected {self.n_features} features "
                    f"({', '.join(c.name for c in self.encoding)}), got {len(row)}"
                )
        frame = pd.DataFrame(
            instances, columns=[c.name for c in self.encoding], dtype=object
        )
        rows = encode(frame, list(self.encoding))
        gap = frame.isna().to_numpy()
        fills = np.asarray([not np.isnan(c.fill) for c in self.encoding])
        low, high = self.bounds
        bad = (np.isnan(rows) & ~(gap & fills)) | np.isinf(rows)
        # A category's index has no range; a date is expected to move on.
        numeric = np.asarray([c.kind in ("numeric", "boolean") for c in self.encoding])
        bad |= ((rows < low) | (rows > high)) & numeric
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise InvalidArgument(self.why_raw(i, j, instances[i][j]))
        return rows

    def why_raw(self, i: int, j: int, value: object) -> str:
        column = self.encoding[j]
        where = f"instances[{i}][{j}] ({column.name})"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (
                f"{where}: a gap (null) where features.columns.{column.name}.missing "
                "is refuse"
            )
        if column.categories is not None:
            return f"{where}: {value!r} is not one of {column.categories}"
        if column.kind in NOT_A:
            return f"{where}: {value!r} is not {NOT_A[column.kind]}"
        if isinstance(value, str):
            return f"{where}: {value!r} is not a number"
        if not math.isfinite(float(value)):  # type: ignore[arg-type]
            return f"{where}: {value!r} is not a finite float32"
        return (
            f"{where}: {value!r} is outside [{self.ranges.low[j]:g}, "
            f"{self.ranges.high[j]:g}] ({self.ranges.setting[j]})"
        )

    def why_not_numbers(self, instances: list[list[float | str | None]]) -> str:
        """The first row of the wrong width, else the first value that is text
        (a model without a `features:` section takes numbers only)."""
        for i, row in enumerate(instances):
            if len(row) != self.n_features:
                width = len(row)
                return (
                    f"instances[{i}]: expected {self.n_features} features, got {width}"
                )
        for i, row in enumerate(instances):
            for j, value in enumerate(row):
                try:
                    float(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    return f"{self.where(i, j)}: {value!r} is not a number"
        return "instances: expected rows of numbers"

    def where(self, i: int, j: int) -> str:
        column = f" ({self.ranges.names[j]})" if self.ranges.names else ""
        return f"instances[{i}][{j}]{column}"

    def why(self, i: int, j: int, value: float | None) -> str:
        where = self.where(i, j)
        if value is None:
            return f"{where}: a gap (null); this model takes a number in every column"
        if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
            return f"{where}: {value!r} is not a finite float32"
        return (
            f"{where}: {value!r} is outside [{self.ranges.low[j]:g}, "
            f"{self.ranges.high[j]:g}] ({self.ranges.setting[j]})"
        )
