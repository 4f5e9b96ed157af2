"""`edgeloop fleet keys ...`: the TUF root kept offline, online keys rotated.

The fleet server's state folder holds the repository (`<state>/fleet/tuf`) and the
online keys (`<state>/fleet/keys`); the root keys are made into `--root-keys`
(default `<state>/fleet-root-keys`), which the server never reads: move it to where
an operator keeps offline keys once it is made, and bring it back to renew or
rotate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from cli.console import ParamsOption, console
from components.config import load_params
from edge_fleet import keys
from stack.settings import Settings, get_settings

keys_app = typer.Typer(
    no_args_is_help=True, help="TUF keys: root offline, online roles rotated"
)

RootKeys = Annotated[
    Path | None,
    typer.Option(
        "--root-keys",
        help="the offline root keys' folder (default <state>/fleet-root-keys)",
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--fleet-state", help="the fleet server's state folder (default <state>/fleet)"
    ),
]


def folders(
    fleet_state: Path | None, root_keys: Path | None, settings: Settings | None = None
) -> tuple[Path, Path, Path]:
    """(tuf repository, online keys, root keys)."""
    settings = settings or get_settings()
    state = fleet_state or settings.state_dir / "fleet"
    return (
        state / "tuf",
        state / "keys",
        root_keys or settings.state_dir / "fleet-root-keys",
    )


@keys_app.command()
def init(
    threshold: Annotated[
        int | None, typer.Option(help="root keys that must sign (fleet.root_threshold)")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--keys", help="root keys to make (fleet.root_keys)")
    ] = None,
    root_keys: RootKeys = None,
    fleet_state: StateDir = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Make the root keys, the online keys and the first root version (once: a
    root devices trust is changed only by `rotate` and `renew`)."""
    cfg = load_params(params_file).fleet
    tuf, online, offline = folders(fleet_state, root_keys)
    md = keys.init(
        tuf,
        online,
        offline,
        threshold=threshold or cfg.root_threshold,
        keys=count or cfg.root_keys,
        expiry=timedelta(days=cfg.root_expiry_days),
    )
    assert md is not None  # without exist_ok, a second init raised
    root = md.signed
    console.print(
        f"root v{root.version}: {root.roles['root'].threshold} of "
        f"{len(root.roles['root'].keyids)} keys in {offline} (keep them offline; "
        f"the server never reads them), expires {root.expires:%Y-%m-%d}"
    )
    console.print(f"online keys in {online}; factory root {tuf}/metadata/1.root.json")


@keys_app.command()
def rotate(
    role: Annotated[str, typer.Argument(help="targets | snapshot | timestamp")],
    root_keys: RootKeys = None,
    fleet_state: StateDir = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """A new key for an online role, in a new root version signed with the root
    keys; the server signs with it from its next tick, devices follow the root."""
    cfg = load_params(params_file).fleet
    tuf, online, offline = folders(fleet_state, root_keys)
    md = keys.rotate(
        tuf, online, offline, role, expiry=timedelta(days=cfg.root_expiry_days)
    )
    console.print(
        f"root v{md.signed.version}: {role} key {md.signed.roles[role].keyids[0][:16]}"
    )


@keys_app.command()
def renew(
    root_keys: RootKeys = None,
    fleet_state: StateDir = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """A new root version with the same keys and a later expiry
    (fleet.root_expiry_days from now)."""
    cfg = load_params(params_file).fleet
    tuf, _online, offline = folders(fleet_state, root_keys)
    md = keys.new_root_version(
        tuf, offline, expiry=timedelta(days=cfg.root_expiry_days)
    )
    console.print(f"root v{md.signed.version}: expires {md.signed.expires:%Y-%m-%d}")


@keys_app.command(name="status")
def show(fleet_state: StateDir = None) -> None:
    """The root's version, threshold and expiry, and what to act on."""
    tuf, online, _offline = folders(fleet_state, None)
    root = keys.current_root(tuf).signed
    days = (root.expires - datetime.now(UTC)).days
    console.print(
        f"root v{root.version}: {root.roles['root'].threshold} of "
        f"{len(root.roles['root'].keyids)} keys, expires in {days} days"
    )
    for warning in keys.warnings(tuf, online, renew_within=RENEW_WITHIN):
        console.print(f"[yellow]warning[/] {warning}")


RENEW_WITHIN = timedelta(days=90)
