"""A short on-device benchmark in the smoke test: the candidate file against the one
the device runs now, timed on the same rows, interleaved, at the same moment, so
that what else the device is doing weighs on both alike. The rollout's latency check
judges the ratio (edge_fleet/checks.py), not two telemetry medians taken minutes
apart."""

from __future__ import annotations

import statistics
import time
from typing import Protocol

import numpy as np

RUNS = 16  # single-row calls of each file, after one warm-up call each


class Runs(Protocol):
    def logits(self, x: np.ndarray) -> np.ndarray: ...


def compare(candidate: Runs, current: Runs | None, rows: np.ndarray) -> dict:
    """Median single-row ms of the candidate and, when there is one, of the file
    running now: {"ms": ..., "previous_ms": ... or None}."""
    files = [candidate] if current is None else [candidate, current]
    times: list[list[float]] = [[] for _ in files]
    for runtime in files:
        runtime.logits(rows[:1])
    for i in range(RUNS):
        row = rows[i % len(rows)][None, :]
        for k, runtime in enumerate(files):
            start = time.perf_counter()
            runtime.logits(row)
            times[k].append((time.perf_counter() - start) * 1000)
    medians = [round(statistics.median(t), 5) for t in times]
    return {"ms": medians[0], "previous_ms": medians[1] if current else None}
