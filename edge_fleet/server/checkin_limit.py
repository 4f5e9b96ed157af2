"""Check-ins per device, bounded: a token bucket per device (`fleet.checkin_burst`
tokens, one back every `FleetConfig.checkin_interval_s`). A device past its budget
is answered 429 with Retry-After and its refusals are counted for ops
(`GET /fleet`, `edgeloop fleet status`). Kept in the server process: a device
that floods one replica of N gets at most N times its budget."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field


@dataclass
class CheckinLimiter:
    burst: int
    interval_s: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, device_id: str, at: float | None = None) -> float | None:
        """None when the device may check in now (a token taken), else the
        seconds until it may."""
        at = time.monotonic() if at is None else at
        with self._lock:
            tokens, since = self._buckets.get(device_id, (float(self.burst), at))
            tokens = min(self.burst, tokens + (at - since) / self.interval_s)
            if tokens >= 1:
                self._buckets[device_id] = (tokens - 1, at)
                return None
            self._buckets[device_id] = (tokens, at)
            self.refused[device_id] = self.refused.get(device_id, 0) + 1
            return (1 - tokens) * self.interval_s

    def over_budget(self) -> dict[str, int]:
        """Each device refused at least once since the server started: refusals."""
        with self._lock:
            return dict(self.refused)


def retry_after(seconds: float) -> str:
    """Retry-After's whole seconds (RFC 9110), never 0."""
    return str(max(1, math.ceil(seconds)))
