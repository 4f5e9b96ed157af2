"""`edgeloop fleet ...`: the fleet's state, rollouts, and the fleet simulator."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from components.errors import ServiceError
from components.settings import Settings, get_settings

fleet_app = typer.Typer(no_args_is_help=True, help="the edge fleet: status, rollouts")
console = Console(soft_wrap=True)
ParamsOption = Annotated[Path, typer.Option("--params")]


def admin(settings: Settings):  # noqa: ANN201 - FleetAdmin, imported lazily
    from edge_fleet.client import FleetAdmin
    from flows.services import is_healthy, stack_secrets

    if not is_healthy(f"{settings.fleet_url}/health"):
        raise ServiceError(
            f"fleet server at {settings.fleet_url} is not answering",
            hint="start the services with `edgeloop up`",
        )
    return FleetAdmin(settings.fleet_url, stack_secrets(settings)["fleet_admin_token"])


@fleet_app.command()
def status(
    devices: Annotated[bool, typer.Option(help="list every device")] = False,
    cohort: Annotated[str | None, typer.Option(help="only this cohort")] = None,
) -> None:
    """Devices by version and health, the published channels, the rollouts."""
    fleet = admin(get_settings())
    print_status(fleet, devices=devices, cohort=cohort)


def print_status(fleet, *, devices: bool = False, cohort: str | None = None) -> None:  # noqa: ANN001
    summary = fleet.summary()
    table = Table("version", "health", "devices", title=f"fleet: {summary['devices']}")
    for row in sorted(
        summary["by_version"], key=lambda r: (str(r["version"]), r["health"])
    ):
        table.add_row(
            f"v{row['version']}" if row["version"] else "-",
            row["health"],
            str(row["devices"]),
        )
    console.print(table)
    for channel, meta in sorted(summary["channels"].items()):
        scope = (
            f"cohorts {','.join(meta['cohorts'])}"
            if meta.get("cohorts")
            else f"{meta.get('basis_points', 10_000) / 100:g}% of devices"
        )
        console.print(
            f"  {channel}: v{meta['version']} ({meta['variant']}, {scope}, "
            f"profiles {','.join(meta['profiles'])})"
        )
    for label, rollout in (
        ("active rollout", summary["active_rollout"]),
        ("last rollout", summary["last_rollout"]),
    ):
        if rollout:
            console.print(
                f"  {label} {rollout['id']}: v{rollout['from_version'] or '-'} -> "
                f"v{rollout['version']}, {rollout['state']} at {rollout['stage_name']}"
                + (f"; cause: {rollout['cause']}" if rollout["cause"] else "")
            )
            if label == "active rollout":
                break
    if devices:
        rows = Table(
            "device",
            "profile",
            "cohort",
            "version",
            "slot",
            "health",
            "last seen",
            "error",
        )
        for d in fleet.devices(cohort):
            rows.add_row(
                d["id"],
                d["profile"],
                d["cohort"],
                f"v{d['current_version']}" if d["current_version"] else "-",
                d["slot"] or "-",
                d["health"],
                (d["last_seen"] or "-")[:19],
                (d["last_error"] or "")[:60],
            )
        console.print(rows)


@fleet_app.command()
def rollout(
    version: Annotated[str, typer.Argument(help="registry version to roll out")],
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Roll a registry version out to the fleet (canary -> waves -> full)."""
    from components.config import load_params
    from flows.cli import _prefect_client_env

    settings = get_settings()
    admin(settings)
    _prefect_client_env(settings)
    from flows.edge_release import edge_release

    result = edge_release(
        settings.tracking_uri,
        load_params(params_file).registry.model_name,
        version,
        settings.fleet_url,
        reason="edgeloop fleet rollout",
    )
    rollout_id = result.rollout["id"] if result.rollout else "-"
    console.print(f"rollout {rollout_id}: {result.state} ({result.detail})")


def _rollout_action(action: str, doc: str) -> None:
    def command(
        rollout_id: Annotated[int, typer.Argument(help="the rollout's id")],
    ) -> None:
        result = admin(get_settings()).act(rollout_id, action)
        console.print(
            f"rollout {result['id']}: {result['state']}"
            + (f"; cause: {result['cause']}" if result["cause"] else "")
        )

    command.__doc__ = doc
    fleet_app.command(name=action)(command)


for _action, _doc in {
    "pause": "Stop a rollout advancing (devices keep what they run).",
    "resume": "Let a paused rollout go on (the stage bakes again).",
    "abort": "Stop a rollout; its devices go back to the stable version.",
    "rollback": "Roll a rollout's devices back to the stable version.",
}.items():
    _rollout_action(_action, _doc)


@fleet_app.command()
def simulate(  # noqa: PLR0913, PLR0917 - the command's options
    devices: Annotated[int, typer.Option(min=1, help="how many devices")] = 50,
    max_s: Annotated[float, typer.Option(help="stop after this long")] = 300,
    drift_cohort: Annotated[
        str | None, typer.Option(help="shift this cohort's inputs")
    ] = None,
    drift: Annotated[str, typer.Option(help="brightness | noise | rotation")] = "noise",
    drift_strength: Annotated[float, typer.Option()] = 4.0,
    faulty: Annotated[
        float, typer.Option(help="share of devices whose installs fail")
    ] = 0.0,
    cut: Annotated[float, typer.Option(help="chance a download is cut midway")] = 0.0,
    broken_release: Annotated[
        bool,
        typer.Option(help="then roll out a corrupted model: the canary must stop it"),
    ] = False,
    prefix: Annotated[
        str, typer.Option(help="device id prefix (state is kept)")
    ] = "sim",
    run_s: Annotated[
        float, typer.Option(help="then keep the devices running (telemetry) this long")
    ] = 0.0,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Simulate DEVICES devices against the fleet server until the champion is on
    every one of them (rolled out canary -> waves -> full if it is not yet)."""

    from components.config import load_params
    from edge_fleet.simulator import FleetSpec, run_fleet
    from flows.services import champion_version

    settings = get_settings()
    params = load_params(params_file)
    fleet = admin(settings)
    champion = champion_version(settings, params_file)
    if champion is None:
        raise ServiceError(
            f"model {params.registry.model_name!r} has no champion to roll out",
            hint="run the pipeline first: `edgeloop run`",
        )
    test = params.paths.prepared / "test.parquet"
    if not test.exists():
        raise ServiceError(f"{test} does not exist", hint="run `edgeloop run` first")
    spec = FleetSpec(
        devices=devices,
        drift_cohort=drift_cohort,
        drift=drift,
        drift_strength=drift_strength,
        faulty_share=faulty,
        cut_share=cut,
        prefix=prefix,
    )
    agents = stack_fleet(
        settings,
        params,
        spec,
        test_split=test,
        home=settings.state_dir / "fleet-sim" / prefix,
    )
    for agent in agents:  # enrolled before the rollout, so stages count them
        agent.step()
    start = time.monotonic()
    _ensure_rollout(settings, params.registry.model_name, champion)

    def settled() -> bool:
        summary = fleet.summary()
        channel = summary["channels"].get("channel/stable", {})
        stable, profiles = channel.get("version"), channel.get("profiles", [])
        return summary["active_rollout"] is None and (
            stable is None
            or all(
                a.id.profile not in profiles  # not eligible for this version
                or (a.version == stable and not a.error)
                or (a.version is None and a.error)  # cannot install (faulty)
                for a in agents
            )
        )

    stats = asyncio.run(run_fleet(agents, params.fleet, done=settled, max_s=max_s))
    console.print(
        f"champion v{champion}: fleet settled in {time.monotonic() - start:.1f} s "
        f"({stats.steps} check-ins, {stats.failed_steps} failed)"
    )
    if broken_release:
        version = _upload_broken(fleet, champion, settings, params.registry.model_name)
        fleet.start_rollout(version, "deliberately broken model (simulate)")
        stats = asyncio.run(run_fleet(agents, params.fleet, done=settled, max_s=max_s))
        last = fleet.rollouts()[0]
        console.print(
            f"broken release v{version}: rollout {last['id']} {last['state']} at "
            f"{last['stage_name']}; cause: {last['cause']}"
        )
    if run_s > 0:
        stats = asyncio.run(
            run_fleet(agents, params.fleet, done=lambda: False, max_s=run_s)
        )
        console.print(f"ran {run_s:.0f} s more: {stats.steps} check-ins with telemetry")
    model_bytes = [a.bytes_received for a in agents]
    console.print(
        f"bytes received per device: median {sorted(model_bytes)[len(agents) // 2]:,}; "
        f"downloads resumed after a cut: {sum(a.resumes for a in agents)}"
    )
    print_status(fleet)


def stack_fleet(
    settings: Settings,
    params,
    spec,
    *,
    test_split: Path,
    home: Path,  # noqa: ANN001
) -> list:
    """Simulated devices (edge_fleet.simulator) against this stack's fleet server:
    the factory root.json of its TUF repository, its enrollment key, and input
    streams drawn from the test split, within the data contract's feature range."""
    import httpx
    import pandas as pd

    from edge_fleet.simulator import build_fleet
    from flows.services import stack_secrets

    return build_fleet(
        spec,
        server=settings.fleet_url,
        home=home,
        factory_root=(
            settings.state_dir / "fleet" / "tuf" / "metadata" / "1.root.json"
        ).read_bytes(),
        enroll_key=stack_secrets(settings)["fleet_enroll_key"],
        cfg=params.fleet,
        inputs=pd.read_parquet(test_split).drop(columns="label").to_numpy(),
        http=httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)),
        value_range=params.validation.feature_range,
    )


def _ensure_rollout(settings: Settings, name: str, version: str) -> None:
    from flows.cli import _prefect_client_env

    _prefect_client_env(settings)
    from flows.edge_release import edge_release

    edge_release(
        settings.tracking_uri, name, version, settings.fleet_url, reason="simulate"
    )


def _upload_broken(fleet, champion: str, settings: Settings, name: str) -> str:  # noqa: ANN001
    """The champion's shipped file with its header overwritten: it cannot load."""
    from flows.edge_release import fetch_ship_file

    shipped = fetch_ship_file.fn(settings.tracking_uri, name, champion)
    data = bytearray(Path(shipped["file"]).read_bytes())
    data[:4096] = hashlib.sha256(b"broken").digest() * 128
    broken = Path(tempfile.mkdtemp()) / Path(shipped["file"]).name
    broken.write_bytes(bytes(data))
    version = f"{champion}-broken"
    fleet.upload(
        version, broken, variant=shipped["variant"], profiles=shipped["profiles"]
    )
    return version
