"""A simulated fleet: N device agents of mixed profiles and cohorts in one process,
each with its own data stream drawn from the test split, talking HTTP to the real
fleet server. Faults on request: drift on one cohort's inputs, faulty devices (every
install fails its smoke test), downloads cut midway (resumed with range requests).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from components.config import FleetConfig
from edge_fleet.agent import Agent, DataStream, Faults, Identity, poll_delay, shift


@dataclass(frozen=True)
class FleetSpec:
    devices: int
    seed: int = 0
    drift_cohort: str | None = None
    drift: str = "noise"
    drift_strength: float = 4.0
    faulty_share: float = 0.0
    cut_share: float = 0.0  # chance per download of a cut link
    prefix: str = "sim"


def build_fleet(
    spec: FleetSpec,
    *,
    server: str,
    home: Path,
    factory_root: bytes,
    enroll_key: str,
    cfg: FleetConfig,
    inputs: np.ndarray,
    http: httpx.Client,
    value_range: tuple[float, float] | None = None,
) -> list[Agent]:
    """Devices with profiles drawn from `fleet.profile_mix` and cohorts in turn;
    their inputs stay within `value_range` (the sensor's, when given)."""
    rng = random.Random(spec.seed)
    profiles, weights = zip(*cfg.profile_mix.items(), strict=True)
    agents = []
    for i in range(spec.devices):
        cohort = cfg.cohorts[i % len(cfg.cohorts)]
        identity = Identity(
            f"{spec.prefix}-{i:05d}", rng.choices(profiles, weights)[0], cohort
        )
        drifting = cohort == spec.drift_cohort
        agents.append(
            Agent(
                server,
                identity,
                home / identity.device_id,
                factory_root=factory_root,
                enroll_key=enroll_key,
                cfg=cfg,
                stream=DataStream(
                    inputs,
                    seed=spec.seed * 100_003 + i,
                    drift=spec.drift if drifting else None,
                    strength=spec.drift_strength if drifting else 0.0,
                    value_range=value_range,
                ),
                http=http,
                faults=Faults(
                    cut_download=spec.cut_share,
                    broken_hardware=rng.random() < spec.faulty_share,
                ),
            )
        )
    return agents


@dataclass
class RunStats:
    steps: int = 0
    failed_steps: int = 0
    seconds: float = 0.0


async def run_fleet(
    agents: list[Agent],
    cfg: FleetConfig,
    *,
    done: Callable[[], bool],
    max_s: float,
    threads: int = 8,
) -> RunStats:
    """Every device polls (jitter, backoff) until `done()` or `max_s` passes."""
    stats = RunStats()
    gate = asyncio.Semaphore(threads)
    stop = asyncio.Event()
    start = time.monotonic()

    async def device(agent: Agent) -> None:
        failures = 0
        await asyncio.sleep(agent.rng.uniform(0, cfg.poll_s))  # spread the start
        while not stop.is_set():
            async with gate:
                try:
                    await asyncio.to_thread(agent.step)
                    failures = 0
                except httpx.HTTPError:
                    failures += 1
                    stats.failed_steps += 1
            stats.steps += 1
            try:
                await asyncio.wait_for(
                    stop.wait(), timeout=poll_delay(cfg, failures, agent.rng)
                )
            except TimeoutError:
                pass

    async def watch() -> None:
        while time.monotonic() - start < max_s:
            if await asyncio.to_thread(done):
                break
            await asyncio.sleep(1.0)
        stop.set()

    await asyncio.gather(watch(), *(device(a) for a in agents))
    stats.seconds = time.monotonic() - start
    return stats


def labelled_rows(
    train: pd.DataFrame,
    *,
    drift: str,
    strength: float,
    rows: int,
    value_range: tuple[float, float] | None,
    label_column: str,
    seed: int = 7,
) -> pd.DataFrame:
    """A simulated labelling team's answer to a drifting cohort: training rows with
    the cohort's shift applied, their true labels, clipped to what a sensor can
    report (the data contract's range)."""
    picked = train.sample(min(rows, len(train)), random_state=seed)
    features = [c for c in train.columns if c != label_column]
    shifted = shift(
        picked[features].to_numpy(np.float32),
        drift,
        strength,
        np.random.default_rng(seed),
    )
    low, high = value_range or (None, None)
    frame = pd.DataFrame(shifted.astype(np.float64), columns=features).clip(
        lower=low, upper=high
    )
    frame[label_column] = picked[label_column].to_numpy()
    return frame
