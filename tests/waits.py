"""Waiting for a condition in a test, with a deadline (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    read: Callable[[], T], done: Callable[[T], bool], max_s: float, every: float = 0.5
) -> T:
    """read() until done(value) or max_s; the last value either way."""
    deadline = time.monotonic() + max_s
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = read()
    return value
