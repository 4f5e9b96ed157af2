"""The calendar parts of a `datetime` feature inside the model: from the minutes
since the column's origin day (components/data/dates.py) to year, month, day,
day of week, day of year, hour and minute, in integer arithmetic that exports to
ONNX (Div, Mod, Where on int64), so a device computes them as training did.

The civil-from-days step is Howard Hinnant's algorithm
(https://howardhinnant.github.io/date_algorithms.html#civil_from_days), exact
for the proleptic Gregorian calendar; `tests/components/test_dates.py` checks it
against pandas over centuries of days, and the exported file against torch."""

from __future__ import annotations

import torch

MINUTES_PER_DAY = 1440
DAYS_FROM_0000_03_01 = 719468  # 0000-03-01 to 1970-01-01
DAYS_PER_ERA = 146097  # 400 Gregorian years


def _div(a: torch.Tensor, b: int) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def civil(days: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(year, month 1-12, day 1-31) of int64 days since 1970-01-01."""
    z = days + DAYS_FROM_0000_03_01
    era = _div(z, DAYS_PER_ERA)
    doe = z - era * DAYS_PER_ERA
    yoe = _div(doe - _div(doe, 1460) + _div(doe, 36524) - _div(doe, 146096), 365)
    doy = doe - (365 * yoe + _div(yoe, 4) - _div(yoe, 100))
    mp = _div(5 * doy + 2, 153)
    day = doy - _div(153 * mp + 2, 5) + 1
    month = torch.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2).to(days.dtype)
    return year, month, day


def days_to_january_first(year: torch.Tensor) -> torch.Tensor:
    """Days from 1970-01-01 to January 1st of `year` (int64)."""
    y = year - 1  # January counts in the previous March-based year
    era = _div(y, 400)
    yoe = y - era * 400
    doe = yoe * 365 + _div(yoe, 4) - _div(yoe, 100) + 306  # 306: March 1 to Jan 1
    return era * DAYS_PER_ERA + doe - DAYS_FROM_0000_03_01


def parts(minutes: torch.Tensor, origin: int, names: list[str]) -> torch.Tensor:
    """The named parts (float, one column each) of float minutes since `origin`'s
    midnight; whole minutes are exact in float32 within about 31 years."""
    m = torch.round(minutes).to(torch.int64)
    days = _div(m, MINUTES_PER_DAY)
    of_day = m - days * MINUTES_PER_DAY
    days = days + origin
    year, month, day = civil(days)
    values = {
        "year": year,
        "month": month,
        "day": day,
        "dayofweek": torch.remainder(days + 3, 7),  # 1970-01-01 was a Thursday
        "dayofyear": days - days_to_january_first(year) + 1,
        "hour": _div(of_day, 60),
        "minute": of_day - _div(of_day, 60) * 60,
    }
    return torch.stack([values[n] for n in names], dim=1).to(minutes.dtype)
