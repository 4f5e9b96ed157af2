"""A `datetime` feature column as the exported model takes it: one float per
value, the minutes since the column's origin (midnight UTC of the earliest
training day), NaN for a gap or a value that is not a date. float32 holds whole
minutes exactly for 2^24 minutes (about 31 years) either side of the origin;
the model computes the calendar parts it was told to use from that number
(components/training/dateparts.py). Text with a UTC offset counts in UTC; text
without one is taken as written."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def instants(values: pd.Series) -> pd.Series:
    """Each value as a UTC timestamp (NaT for a gap, a number, or text that is
    not a date: a number has no unit a user agreed to). Text, timestamps and
    dates (a Parquet date32 column reads as `datetime.date`) are dates."""
    texts = values.map(
        lambda v: v if isinstance(v, str | date | np.datetime64) else None
    )
    parsed = pd.to_datetime(texts, errors="coerce", utc=True, format="mixed")
    return pd.Series(parsed, index=values.index)


def origin_day(values: pd.Series) -> int:
    """Days from 1970-01-01 to the earliest training value's day (0 when none)."""
    first = instants(values).min()
    return 0 if pd.isna(first) else int((first - EPOCH).days)


def minutes_since(values: pd.Series, origin: int) -> np.ndarray:
    """Whole minutes from the origin day's midnight UTC (float32; NaN for NaT)."""
    at = instants(values)
    zero = EPOCH + pd.Timedelta(days=origin)
    minutes = (at - zero) // pd.Timedelta(minutes=1)
    return minutes.astype("float64").to_numpy().astype(np.float32)
