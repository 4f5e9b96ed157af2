"""The calendar parts of a `datetime` feature inside a model, written once over
the tensor library's own ops (PyTorch's for the ONNX files, TensorFlow's for the
TFLite files): from whole days since 1970-01-01 and minutes into the day to
year, month, day, day of week, day of year, hour and minute, in integer
arithmetic that exports as plain ops.

The civil-from-days step is Howard Hinnant's algorithm
(https://howardhinnant.github.io/date_algorithms.html#civil_from_days), exact
for the proleptic Gregorian calendar; `tests/components/test_dates.py` and
`tests/components/test_keras_tables.py` check it against pandas over
centuries of days."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MINUTES_PER_DAY = 1440
DAYS_FROM_0000_03_01 = 719468  # 0000-03-01 to 1970-01-01
DAYS_PER_ERA = 146097  # 400 Gregorian years


@dataclass(frozen=True)
class Ops:
    """What the arithmetic needs of a tensor library beyond + - * and <."""

    div: Callable[[Any, int], Any]  # floor division by a whole number
    mod: Callable[[Any, int], Any]  # its remainder (never negative)
    where: Callable[[Any, Any, Any], Any]
    flag: Callable[[Any, Any], Any]  # a boolean tensor as 0/1 in the other's type


def civil(days: Any, ops: Ops) -> tuple[Any, Any, Any]:
    """(year, month 1-12, day 1-31) of integer days since 1970-01-01."""
    div = ops.div
    z = days + DAYS_FROM_0000_03_01
    era = div(z, DAYS_PER_ERA)
    doe = z - era * DAYS_PER_ERA
    yoe = div(doe - div(doe, 1460) + div(doe, 36524) - div(doe, 146096), 365)
    doy = doe - (365 * yoe + div(yoe, 4) - div(yoe, 100))
    mp = div(5 * doy + 2, 153)
    day = doy - div(153 * mp + 2, 5) + 1
    month = ops.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + ops.flag(month <= 2, days)
    return year, month, day


def days_to_january_first(year: Any, ops: Ops) -> Any:
    """Days from 1970-01-01 to January 1st of `year`."""
    y = year - 1  # January counts in the previous March-based year
    era = ops.div(y, 400)
    yoe = y - era * 400
    doe = yoe * 365 + ops.div(yoe, 4) - ops.div(yoe, 100) + 306  # March 1 to Jan 1
    return era * DAYS_PER_ERA + doe - DAYS_FROM_0000_03_01


def part_values(minutes: Any, origin: int, ops: Ops) -> dict[str, Any]:
    """Every part, each an integer tensor, of integer minutes since `origin`'s
    midnight (`origin`: days since 1970-01-01)."""
    days = ops.div(minutes, MINUTES_PER_DAY)
    of_day = minutes - days * MINUTES_PER_DAY
    days = days + origin
    year, month, day = civil(days, ops)
    hour = ops.div(of_day, 60)
    return {
        "year": year,
        "month": month,
        "day": day,
        "dayofweek": ops.mod(days + 3, 7),  # 1970-01-01 was a Thursday
        "dayofyear": days - days_to_january_first(year, ops) + 1,
        "hour": hour,
        "minute": of_day - hour * 60,
    }
