"""The agent's seams: what it reads of its settings (`Polling`), where its rows come
from (`Inputs`) and what can interfere with it (`Interference`: nothing on real
hardware; a simulator's faults in edge_fleet/sim/)."""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Protocol

import numpy as np


class Polling(Protocol):
    """What the agent reads of its settings: the fleet's `fleet:` params in a
    simulator (components.config.FleetConfig), the device's own file on hardware
    (edge_fleet/device/config.py, AgentConfig)."""

    poll_s: float
    poll_jitter: float
    max_backoff_s: float
    max_metadata_age_s: float
    telemetry_batch: int

    @property
    def sample_cohorts(self) -> Collection[str]: ...


class Inputs(Protocol):
    x: np.ndarray  # the rows the smoke test answers

    def batch(self, n: int) -> np.ndarray: ...


class Interference(Protocol):
    """What can go wrong on a device that the device does not cause itself: none
    on real hardware (`NoInterference`); a simulator's faults (edge_fleet.sim)."""

    def cut_at(self, url: str, rng: random.Random) -> int | None: ...

    def on_cut(self, url: str) -> None: ...

    def smoke_test_fault(self) -> str | None: ...


class NoInterference:
    def cut_at(self, url: str, rng: random.Random) -> int | None:
        return None

    def on_cut(self, url: str) -> None:
        return None

    def smoke_test_fault(self) -> str | None:
        return None
