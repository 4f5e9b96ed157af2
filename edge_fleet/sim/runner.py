"""A simulated fleet: N device agents of mixed profiles and cohorts in one process,
each with its own data stream drawn from the test split, talking HTTP to the real
fleet server. Faults on request: drift on one cohort's inputs, faulty devices (every
install fails its smoke test), downloads cut midway (resumed with range requests).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from components.config import FleetConfig, SpeechConfig
from components.data.features import ColumnEncoding
from edge_fleet.device import audio
from edge_fleet.device.agent import Agent, Identity, RuntimeCache
from edge_fleet.device.micro import Board
from edge_fleet.device.polling import next_delay
from edge_fleet.sim.faults import Faults
from edge_fleet.sim.streams import DataStream, drift_kind

# One loaded runtime per model file for all simulated devices of this process (per
# TFLM arena: boards of a profile share theirs).
SHARED_RUNTIMES = RuntimeCache()
_BOARD_RUNTIMES: dict[Board, RuntimeCache] = {}


def shared_runtimes(board: Board | None) -> RuntimeCache:
    if board is None:
        return SHARED_RUNTIMES
    return _BOARD_RUNTIMES.setdefault(board, RuntimeCache(board))


@dataclass(frozen=True)
class FleetSpec:
    devices: int
    seed: int = 0
    drift_cohort: str | None = None
    drift: str = "auto"  # streams.drift_kind
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
    enroll_code: str | None,
    cfg: FleetConfig,
    inputs: np.ndarray,
    http: httpx.Client,
    value_range: tuple[float, float] | None = None,
    encoding: Sequence[ColumnEncoding] = (),
    boards: dict[str, Board] | None = None,
    speech: SpeechConfig | None = None,
) -> list[Agent]:
    """Devices with profiles drawn from `fleet.profile_mix` and cohorts in turn;
    their inputs stay within `value_range` (the sensor's, when given); with the
    model's `encoding` the inputs are a table's, and drift by column kind.
    `boards`: what each micro profile's boards have (TFLM arena, flash).
    `speech`: the inputs are a keyword spotter's MFCC rows of clips spoken so
    (data.speech): the devices report clip summaries, and drift is loud
    surroundings."""
    boards = boards or {}
    rng = random.Random(spec.seed)
    kind = drift_kind(spec.drift, table=bool(encoding), audio=speech is not None)
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
                enroll_code=enroll_code,
                cfg=cfg,
                stream=DataStream(
                    inputs,
                    seed=spec.seed * 100_003 + i,
                    drift=kind if drifting else None,
                    strength=spec.drift_strength if drifting else 0.0,
                    value_range=value_range,
                    encoding=encoding,
                    speech=speech,
                ),
                http=http,
                faults=Faults(
                    cut_download=spec.cut_share,
                    broken_hardware=rng.random() < spec.faulty_share,
                ),
                runtimes=shared_runtimes(boards.get(identity.profile)),
                front_end=audio.SUMMARY if speech is not None else None,
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
                    stop.wait(), timeout=next_delay(agent, cfg, failures)
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
