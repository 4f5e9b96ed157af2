"""When the agent checks in next: its poll interval with jitter, exponential
backoff after failures, and the fleet server's Retry-After (a 429: the device
checks in more often than its budget)."""

from __future__ import annotations

import random
from typing import Protocol

from edge_fleet.device.seams import Polling


class Throttled(Protocol):
    """What of the agent the next delay reads: its jitter's random source, and the
    Retry-After of its last refused check-in (taken once)."""

    rng: random.Random
    retry_after_s: float


def poll_delay(cfg: Polling, failures: int, rng: random.Random) -> float:
    """The next check-in: poll_s with jitter; exponential backoff after failures."""
    base = (
        cfg.poll_s
        if failures == 0
        else min(cfg.max_backoff_s, cfg.poll_s * 2**failures)
    )
    return base * (1 + rng.uniform(-cfg.poll_jitter, cfg.poll_jitter))


def next_delay(agent: Throttled, cfg: Polling, failures: int) -> float:
    """The poll delay, or the server's Retry-After where it said to wait longer."""
    wait, agent.retry_after_s = agent.retry_after_s, 0.0
    return max(poll_delay(cfg, failures, agent.rng), wait)


def retry_after_s(header: str | None) -> float:
    """Retry-After in seconds (an HTTP date is not sent by the fleet server: 1 s)."""
    try:
        return min(max(float(header or 1), 0.0), 3600.0)
    except ValueError:
        return 1.0
