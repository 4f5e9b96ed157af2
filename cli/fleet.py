"""`edgeloop fleet ...`: the fleet's state, rollouts, and the fleet simulator."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import DriftOption, ParamsOption, console, one_line_logs
from cli.fleet_keys import keys_app
from components.config import load_params
from edge_fleet.client import FleetAdmin, stack_fleet_admin
from stack.settings import Settings, get_settings

if TYPE_CHECKING:
    from scenarios.fleet import Simulation

fleet_app = typer.Typer(no_args_is_help=True, help="the edge fleet: status, rollouts")
fleet_app.add_typer(keys_app, name="keys")


def admin(settings: Settings) -> FleetAdmin:
    return stack_fleet_admin(settings)


@fleet_app.command()
def status(
    devices: Annotated[bool, typer.Option(help="list every device")] = False,
    cohort: Annotated[str | None, typer.Option(help="only this cohort")] = None,
) -> None:
    """Devices by version and health, the published channels, the rollouts."""
    fleet = admin(get_settings())
    print_status(fleet)
    if devices:
        print_devices(fleet, cohort)


def print_status(fleet: FleetAdmin) -> None:
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
    throttled = summary.get("throttled") or {}
    if throttled:
        worst = sorted(throttled.items(), key=lambda kv: -kv[1])[:10]
        console.print(
            f"  over their check-in budget ({len(throttled)} devices, 429s): "
            + ", ".join(f"{d} {n}" for d, n in worst)
        )


def print_devices(fleet: FleetAdmin, cohort: str | None) -> None:
    rows = Table(
        "device", "profile", "cohort", "version", "slot", "health", "last seen", "error"
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
    # Prefect reads its environment when imported: the flows are imported after the
    # root callback set it, and only by the commands that run one.
    from flows.edge_release import edge_release

    one_line_logs()
    settings = get_settings()
    admin(settings)
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


@fleet_app.command(name="enroll-code")
def enroll_code(
    profile: Annotated[
        list[str], typer.Option(help="a profile the device(s) may enroll as")
    ],
    cohort: Annotated[list[str], typer.Option(help="a cohort they may join")],
    device_id: Annotated[
        str | None, typer.Option(help="the one device this code enrolls")
    ] = None,
    devices: Annotated[
        int, typer.Option(min=1, help="a batch code: how many devices")
    ] = 1,
    expires_in_s: Annotated[int, typer.Option(help="valid this long")] = 7 * 86400,
) -> None:
    """Issue an enrollment code (shown once): for one device id, or a batch of
    DEVICES; either way of the given profiles and cohorts only. The device uses
    it once: `edgeloop-agent --config F enroll --code CODE`."""
    issued = admin(get_settings()).enrollment_code(
        profiles=profile,
        cohorts=cohort,
        device_id=device_id,
        devices=devices,
        expires_in_s=expires_in_s,
    )
    who = f"device {device_id}" if device_id else f"up to {devices} devices"
    console.print(
        f"enrollment code {issued['id']} for {who} ({', '.join(profile)}; "
        f"{', '.join(cohort)}), expires {issued['expires_at']}:"
    )
    console.print(issued["code"], markup=False, highlight=False)


@fleet_app.command()
def revoke(device_id: Annotated[str, typer.Argument()]) -> None:
    """Stop a device's token working now (its record and telemetry stay)."""
    admin(get_settings()).revoke(device_id)
    console.print(f"revoked {device_id}: its token answers 401")


@fleet_app.command(name="rotate-token")
def rotate_token(device_id: Annotated[str, typer.Argument()]) -> None:
    """A new token for a device (the old one stops working); printed once."""
    token = admin(get_settings()).rotate_token(device_id)["token"]
    console.print(f"new token for {device_id} (put it in its state.json):")
    console.print(token, markup=False, highlight=False)


@fleet_app.command()
def explain(
    device_id: Annotated[str, typer.Argument()],
    at: Annotated[
        str | None,
        typer.Option(help="a time (ISO 8601, e.g. 2026-12-07T18:00:00Z; default: now)"),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="the answer as JSON")
    ] = False,
) -> None:
    """Which version a device ran (now, or --at a time) and why: the rollout and
    stage, the gate and its seal, the training run, the drift event, the data."""
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise typer.BadParameter(
                f"{at!r}: expected an ISO 8601 time, e.g. 2026-12-07T18:00:00Z",
                param_hint="--at",
            ) from None
        at = (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()
    answer = admin(get_settings()).ledger(device_id, at)
    if json_out:
        console.print_json(data=answer)
        return
    for line in answer["chain"]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@fleet_app.command(name="delete-device")
def delete_device(device_id: Annotated[str, typer.Argument()]) -> None:
    """Remove a device and its telemetry; its id may enroll again."""
    admin(get_settings()).delete_device(device_id)
    console.print(f"deleted {device_id}")


@fleet_app.command()
def simulate(  # noqa: PLR0917 - the command's options
    devices: Annotated[int, typer.Option(min=1, help="how many devices")] = 50,
    max_s: Annotated[float, typer.Option(help="stop after this long")] = 300,
    drift_cohort: Annotated[
        str | None, typer.Option(help="shift this cohort's inputs")
    ] = None,
    drift: DriftOption = "auto",
    drift_strength: Annotated[float, typer.Option()] = 4.0,
    faulty: Annotated[
        float, typer.Option(help="share of devices whose installs fail")
    ] = 0.0,
    cut: Annotated[float, typer.Option(help="chance a download is cut midway")] = 0.0,
    broken_release: Annotated[
        bool,
        typer.Option(
            help="then roll out a model that loads but fails on the devices' own "
            "rows (ONNX champions): the canary must stop it"
        ),
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
    # The scenario runs the edge_release flow: imported after the root callback set
    # Prefect's environment (see `rollout`); the simulator loads the device runtimes.
    from edge_fleet.sim.runner import FleetSpec
    from scenarios.fleet import simulate as simulate_fleet

    one_line_logs()
    settings = get_settings()
    spec = FleetSpec(
        devices=devices,
        drift_cohort=drift_cohort,
        drift=drift,
        drift_strength=drift_strength,
        faulty_share=faulty,
        cut_share=cut,
        prefix=prefix,
    )
    result = simulate_fleet(
        settings,
        params_file,
        spec,
        max_s=max_s,
        broken_release=broken_release,
        run_s=run_s,
    )
    print_simulation(result, run_s)
    print_status(admin(settings))


def print_simulation(result: Simulation, run_s: float) -> None:
    console.print(
        f"champion v{result.champion}: fleet settled in {result.settled_s:.1f} s "
        f"({result.check_ins} check-ins, {result.failed_check_ins} failed)"
    )
    if result.broken is not None:
        last = result.broken
        console.print(
            f"broken release v{last['version']}: rollout {last['id']} {last['state']} "
            f"at {last['stage_name']}; cause: {last['cause']}"
        )
    if result.extra_check_ins is not None:
        console.print(
            f"ran {run_s:.0f} s more: {result.extra_check_ins} check-ins with telemetry"
        )
    received = sorted(a.bytes_received for a in result.agents)
    console.print(
        f"bytes received per device: median {received[len(received) // 2]:,}; "
        f"downloads resumed after a cut: {sum(a.resumes for a in result.agents)}"
    )
