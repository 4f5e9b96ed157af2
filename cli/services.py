"""`edgeloop up | down | status | register`: the local stack on loopback, a thin
client of its process manager (stack/supervisor.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from rich.table import Table

from cli.console import ParamsOption, console
from cli.fleet_keys import RENEW_WITHIN, folders
from components.config import load_params
from edge_fleet import keys
from stack.mlflow_auth import ensure_service_user
from stack.services import ensure_webhook, use_stack_credentials
from stack.settings import Settings, get_settings
from stack.supervisor import ON_DEMAND, ServiceState, Supervisor, ensure_serving


def register_stack(
    settings: Settings,
    params_file: Path = Path("params.yaml"),
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """MLflow's service user, the MLflow webhook, the Prefect deployments and the
    drift automation, on the servers the settings name (idempotent)."""
    # Prefect, imported with the flows: after the root callback set its environment.
    from flows.deployments import register

    params = load_params(params_file)
    progress("making MLflow's service user")
    ensure_service_user(settings, params.registry.model_name)
    progress("registering the MLflow webhook")
    ensure_webhook(settings)
    progress("registering the Prefect deployments and the drift automation")
    register(settings, Path("."), params)


def start_all(
    settings: Settings,
    params_file: Path = Path("params.yaml"),
    progress: Callable[[str], None] = lambda _: None,
) -> list[ServiceState]:
    """The process manager and the servers it starts together, then what needs
    them: the deployments (on Prefect), the worker that runs them, and serving once
    the registry has a champion. A service that is down is started again."""
    supervisor = Supervisor(settings, params_file)
    if make_fleet_root(settings, params_file):
        progress("made the fleet's TUF root (see `edgeloop fleet keys status`)")
    if supervisor.running():
        progress("the process manager is running: starting what is down")
    else:
        progress("starting the process manager (supervisord) and the servers")
        supervisor.start()
    use_stack_credentials(settings)  # the secrets the first start made
    states = []
    for name in supervisor.specs:
        if name not in ON_DEMAND:
            progress(f"waiting for {name}")
            states.append(supervisor.ensure(name))
    register_stack(settings, params_file, progress=progress)
    progress("starting the worker")
    states.append(supervisor.ensure("worker"))
    serving = ensure_serving(settings, params_file, progress=progress)
    return states + ([supervisor.state("serving")] if serving else [])


def make_fleet_root(settings: Settings, params_file: Path) -> bool:
    """The fleet's TUF root and keys on the first start of the embedded stack
    (fleet.root_keys, fleet.root_threshold); a compose install makes them with
    `edgeloop fleet keys init`."""
    cfg = load_params(params_file).fleet
    tuf, online, offline = folders(None, None, settings)
    made = keys.init(
        tuf,
        online,
        offline,
        threshold=cfg.root_threshold,
        keys=cfg.root_keys,
        expiry=timedelta(days=cfg.root_expiry_days),
        exist_ok=True,
    )
    return made is not None


def up(params_file: ParamsOption = Path("params.yaml")) -> None:
    """Start the local services on loopback under the process manager, which
    restarts one that exits."""
    settings = get_settings()
    with console.status("starting services") as status:
        states = start_all(settings, params_file, progress=status.update)
    for state in states:
        console.print(
            f"[green]{state.name}[/] {state.url}  (pid {state.pid}, log {state.log})"
        )
    if "serving" not in {state.name for state in states}:
        console.print(
            "[yellow]serving[/] waits for a champion: `edgeloop run` trains one and "
            "starts it"
        )


def register(params_file: ParamsOption = Path("params.yaml")) -> None:
    """Register the MLflow webhook, the Prefect deployments and the drift automation
    on running servers (what `up` does after starting them; a compose install runs
    it once)."""
    settings = get_settings()
    register_stack(settings, params_file)
    console.print(
        f"registered: webhook {settings.webhook_url} on {settings.tracking_uri}; "
        f"deployments and drift automation on {settings.prefect_api}"
    )


def down() -> None:
    """Stop the services `edgeloop up` started, and their process manager."""
    stopped = Supervisor(get_settings()).stop()
    console.print("stopped: " + (", ".join(stopped) or "nothing was running"))


def status() -> None:
    """Show the local services and whether they answer."""
    table = Table("service", "url", "pid", "state")
    for s in Supervisor(get_settings()).states():
        state = (
            "[green]up[/]"
            if s.healthy
            else ("[yellow]starting[/]" if s.running else "[red]down[/]")
        )
        table.add_row(s.name, s.url, str(s.pid or "-"), state)
    console.print(table)
    tuf, online, _offline = folders(None, None)
    if (tuf / "metadata" / "root.json").exists():
        for warning in keys.warnings(tuf, online, renew_within=RENEW_WITHIN):
            console.print(f"[yellow]fleet keys[/] {warning}")
