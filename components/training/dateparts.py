"""The calendar parts of a `datetime` feature inside the model: from the minutes
since the column's origin day (components/data/dates.py) to year, month, day,
day of week, day of year, hour and minute, in integer arithmetic that exports to
ONNX (Div, Mod, Where on int64), so a device computes them as training did.

The arithmetic is components/training/calendar.py's (shared with the Keras
layer); `tests/components/test_dates.py` checks it against pandas over
centuries of days, and the exported file against torch."""

from __future__ import annotations

import torch

from components.training import calendar

TORCH = calendar.Ops(
    div=lambda a, b: torch.div(a, b, rounding_mode="floor"),
    mod=torch.remainder,
    where=torch.where,
    flag=lambda condition, like: condition.to(like.dtype),
)


def civil(days: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(year, month 1-12, day 1-31) of int64 days since 1970-01-01."""
    return calendar.civil(days, TORCH)


def parts(minutes: torch.Tensor, origin: int, names: list[str]) -> torch.Tensor:
    """The named parts (float, one column each) of float minutes since `origin`'s
    midnight; whole minutes are exact in float32 within about 31 years."""
    values = calendar.part_values(torch.round(minutes).to(torch.int64), origin, TORCH)
    return torch.stack([values[n] for n in names], dim=1).to(minutes.dtype)
