"""A simulated fleet against the stack's own fleet server: devices built from the
stack's TUF root and enrollment key with input streams from the test split, the
champion rolled out to them through the `edge_release` flow, a deliberately broken
release (one the fleet server takes, that fails on the devices' own rows), and the
fleet run until it settles (`edgeloop fleet simulate`)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd

from components.config import Params, SpeechConfig, load_params
from components.data.features import model_encoding, model_input
from components.data.sources import feature_columns
from components.errors import ServiceError
from edge_fleet.client import FleetAdmin, stack_fleet_admin
from edge_fleet.device.agent import Agent
from edge_fleet.device.micro import Board
from edge_fleet.sim.broken_model import fails_on_data
from edge_fleet.sim.runner import FleetSpec, build_fleet, run_fleet
from flows.edge_release import edge_release, fetch_ship_file
from scenarios.labelling import simulated_encoding
from stack.contracts import Channel
from stack.services import champion_version
from stack.settings import Settings


def stack_fleet(
    settings: Settings,
    params: Params,
    spec: FleetSpec,
    *,
    test_split: Path,
    model_dir: Path,
    home: Path,
) -> list[Agent]:
    """Simulated devices (edge_fleet.sim) against this stack's fleet server:
    the factory root.json of its TUF repository, an enrollment code for this batch
    (its profiles and cohorts), and input streams drawn from the test split, within
    the data contract's feature range, as the trained model in `model_dir` takes
    them (a category by its index, a gap as NaN)."""
    test, label = pd.read_parquet(test_split), params.data.label_column
    encoding = model_encoding(model_dir)
    code = stack_fleet_admin(settings).enrollment_code(
        profiles=sorted(params.fleet.profile_mix),
        cohorts=params.fleet.cohorts,
        devices=spec.devices,
        expires_in_s=3600,
    )
    return build_fleet(
        spec,
        server=settings.fleet_url,
        home=home,
        factory_root=(
            settings.state_dir / "fleet" / "tuf" / "metadata" / "1.root.json"
        ).read_bytes(),
        enroll_code=code["code"],
        cfg=params.fleet,
        inputs=model_input(test, feature_columns(test, label), encoding),
        http=httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)),
        value_range=params.validation.feature_range,
        encoding=simulated_encoding(model_dir, params, test),
        boards=boards(params),
        speech=spoken(params),
    )


def ensure_rollout(settings: Settings, name: str, version: str, reason: str) -> None:
    """`version` on its way to the fleet (the edge_release flow: a no-op when it is
    already rolling out or stable)."""
    edge_release(
        settings.tracking_uri, name, version, settings.fleet_url, reason=reason
    )


def stable_version(fleet: FleetAdmin) -> str | None:
    return fleet.summary()["channels"].get(Channel.STABLE, {}).get("version")


def eligible_profiles(fleet: FleetAdmin) -> set[str]:
    """The device profiles the stable version goes to."""
    return stable_profiles(fleet.summary()["channels"])


def stable_profiles(channels: dict[str, dict]) -> set[str]:
    """The profiles the stable version's file is deployable to, and those with a
    file of their own in the stable channel (`channel/stable/<profile>`)."""
    return {
        profile
        for path, meta in channels.items()
        if path == Channel.STABLE or path.startswith(f"{Channel.STABLE}/")
        for profile in meta.get("profiles", [])
    }


def upload_broken(
    fleet: FleetAdmin, champion: str, settings: Settings, name: str
) -> str:
    """The champion's shipped file made to answer NaN for any row but zeros
    (edge_fleet/sim/broken_model.py: it passes the server's load check, and fails
    every device's smoke test), uploaded as a new version; returns that version."""
    shipped = fetch_ship_file.fn(settings.tracking_uri, name, champion)
    source = Path(shipped["file"])
    broken = fails_on_data(source, Path(tempfile.mkdtemp()) / source.name)
    version = f"{champion}-broken"
    fleet.upload(
        version,
        broken,
        model=name,
        variant=shipped["variant"],
        profiles=shipped["profiles"],
        features=shipped["features"],
    )
    return version


@dataclass(frozen=True)
class Simulation:
    champion: str
    settled_s: float
    check_ins: int
    failed_check_ins: int
    agents: list[Agent]
    broken: dict | None = None  # the broken release's rollout, when asked for
    extra_check_ins: int | None = None  # check-ins of the --run-s phase


def settled(fleet: FleetAdmin, agents: list[Agent]) -> bool:
    """No rollout active and every eligible device on the stable version (or unable
    to install: a faulty one)."""
    summary = fleet.summary()
    stable = summary["channels"].get(Channel.STABLE, {}).get("version")
    profiles = stable_profiles(summary["channels"])
    return summary["active_rollout"] is None and (
        stable is None
        or all(
            a.id.profile not in profiles  # not eligible for this version
            or (a.version == stable and not a.error)
            or (a.version is None and a.error)  # cannot install (faulty)
            for a in agents
        )
    )


def enrolled_fleet(settings: Settings, params: Params, spec: FleetSpec) -> list[Agent]:
    """The simulated devices, their inputs from the test split, each enrolled (so a
    rollout's stages count them) and checked in once."""
    test = params.paths.prepared / "test.parquet"
    if not test.exists():
        raise ServiceError(f"{test} does not exist", hint="run `edgeloop run` first")
    agents = stack_fleet(
        settings,
        params,
        spec,
        test_split=test,
        model_dir=params.paths.model,
        home=settings.state_dir / "fleet-sim" / spec.prefix,
    )
    for agent in agents:
        agent.step()
    return agents


def simulate(
    settings: Settings,
    params_file: Path,
    spec: FleetSpec,
    *,
    max_s: float,
    broken_release: bool = False,
    run_s: float = 0.0,
) -> Simulation:
    """`spec.devices` devices until the champion is on every eligible one (rolled
    out canary -> waves -> full if it is not yet); then, when asked, a broken
    release the canary must stop, and more running time for telemetry."""
    params = load_params(params_file)
    fleet = stack_fleet_admin(settings)
    name = params.registry.model_name
    champion = champion_version(settings, params_file)
    if champion is None:
        raise ServiceError(
            f"model {name!r} has no champion to roll out",
            hint="run the pipeline first: `edgeloop run`",
        )
    agents = enrolled_fleet(settings, params, spec)
    start = time.monotonic()
    ensure_rollout(settings, name, champion, "simulate")

    def done() -> bool:
        return settled(fleet, agents)

    stats = asyncio.run(run_fleet(agents, params.fleet, done=done, max_s=max_s))
    result = Simulation(
        champion, time.monotonic() - start, stats.steps, stats.failed_steps, agents
    )
    broken = None
    if broken_release:
        version = upload_broken(fleet, champion, settings, name)
        fleet.start_rollout(version, "deliberately broken model (simulate)")
        asyncio.run(run_fleet(agents, params.fleet, done=done, max_s=max_s))
        broken = fleet.rollouts()[0]
    extra = None
    if run_s > 0:
        stats = asyncio.run(
            run_fleet(agents, params.fleet, done=lambda: False, max_s=run_s)
        )
        extra = stats.steps
    return Simulation(
        result.champion,
        result.settled_s,
        result.check_ins,
        result.failed_check_ins,
        agents,
        broken,
        extra,
    )


def newest_report(fleet: FleetAdmin, cohort: str) -> datetime | None:
    """When the fleet server received the cohort's newest report (its clock)."""
    latest = fleet.telemetry(cohort, 1)
    return datetime.fromisoformat(latest[0]["received_at"]) if latest else None


def reported_since(
    fleet: FleetAdmin,
    cohort: str,
    after: datetime | None,
    count: int,
    *,
    version: str | None = None,
) -> bool:
    """Whether the cohort's newest `count` reports all arrived after `after` (and
    come from `version`, when given)."""
    newest = fleet.telemetry(cohort, count)
    return len(newest) >= count and all(
        (after is None or datetime.fromisoformat(r["received_at"]) > after)
        and (version is None or r["version"] == version)
        for r in newest
    )


def boards(params: Params) -> dict[str, Board]:
    """What each micro profile's simulated boards have: its arena and flash."""
    return {
        name: Board(int(profile.max_arena_kb * 1024), int(profile.max_flash_kb * 1024))
        for name, profile in params.optimize.profiles.items()
        if profile.runtime == "micro" and profile.max_arena_kb and profile.max_flash_kb
    }


def spoken(params: Params) -> SpeechConfig | None:
    """The clips' settings when the data set is spoken keywords (data.speech)."""
    return params.data.spoken
