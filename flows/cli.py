"""`edgeloop`: start and stop the local services, run the pipeline, validate a file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from components.errors import EdgeloopError, ServiceError
from components.settings import Settings, get_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="edgeloop: versioned data to a fleet of edge devices and back.",
)
console = Console(soft_wrap=True)
err = Console(stderr=True)
STATE = {"debug": False}

from flows.fleet_cli import fleet_app  # noqa: E402 - after the app it joins

app.add_typer(fleet_app, name="fleet")


ParamsOption = Annotated[Path, typer.Option("--params")]


@app.command()
def loop(  # noqa: PLR0913, PLR0917 - the command's options
    devices: Annotated[int, typer.Option(min=3, help="simulated devices")] = 50,
    cohort: Annotated[
        str,
        typer.Option(help="the cohort that drifts; auto: one not drifted before"),
    ] = "auto",
    drift: Annotated[str, typer.Option(help="noise | brightness | rotation")] = "noise",
    strength: Annotated[float, typer.Option()] = 3.0,
    label_rows: Annotated[int, typer.Option(help="labelled rows that arrive")] = 600,
    max_s: Annotated[float, typer.Option(help="time for retrain + rollout")] = 900,
    project: Annotated[Path, typer.Option(help="project root")] = Path("."),
) -> None:
    """The closed loop: fleet rollout, drift on a cohort, detection, retraining by
    the automation, and the new model on every device of that cohort."""
    from flows.loop import fmt_share, run_loop

    settings = get_settings()
    _prefect_client_env(settings)
    report = run_loop(
        settings,
        project,
        devices=devices,
        cohort=cohort,
        drift=drift,
        strength=strength,
        label_rows=label_rows,
        max_s=max_s,
        say=console.print,
    )
    table = Table("step", "seconds", "what", title="edgeloop loop")
    for name, seconds, detail in report.steps:
        table.add_row(name, f"{seconds:.1f}", detail)
    console.print(table)
    console.print(
        f"drift share of cohort-{report.cohort}: before "
        f"{fmt_share(report.drift_before)}, after {fmt_share(report.drift_after)}; "
        f"versions: v{report.old_version} -> v{report.new_version or '-'}"
    )
    if report.accuracy_before or report.accuracy_after:
        console.print(
            f"accuracy on the cohort's delayed labels: before "
            f"{report.accuracy_before or '-'}; after {report.accuracy_after or '-'}"
        )
    if report.why:
        console.print(f"v{report.new_version}: {report.why}")
    console.print(f"[bold]{report.outcome}[/]")
    console.print(
        f"MLflow {settings.tracking_uri} | Prefect {settings.prefect_ui} | "
        f"Evidently {settings.evidently_url} | fleet {settings.fleet_url}/docs"
    )
    if not report.outcome.startswith("loop closed"):
        raise ServiceError(report.outcome)


drift_app = typer.Typer(no_args_is_help=True, help="drift monitoring (Evidently)")
app.add_typer(drift_app, name="drift")


@drift_app.command("check")
def drift_check(
    project: Annotated[Path, typer.Option(help="project root")] = Path("."),
) -> None:
    """Run the monitor flow once: serving's log and every fleet cohort against the
    champion's reference, accuracy on delayed labels; snapshots to the Evidently
    workspace; an event on drift."""
    from flows.services import evidently_workspace, is_healthy

    settings = get_settings()
    _prefect_client_env(settings)
    from flows.monitor import monitor

    fleet = settings.fleet_url if is_healthy(f"{settings.fleet_url}/health") else None
    registry = settings.tracking_uri
    outcomes = monitor(
        str(project),
        workspace_dir=str(evidently_workspace(settings)),
        state_file=str(settings.state_dir / "monitor" / "state.json"),
        fleet_url=fleet,
        tracking_uri=registry if is_healthy(f"{registry}/health") else None,
    )
    table = Table(
        "target",
        "rows",
        "drift share",
        "drifted",
        "decision",
        "reference",
        "accuracy, delayed labels",
        title="drift",
    )
    for o in outcomes:
        accuracy = (
            f"{o['accuracy_delayed']:.3f} on {o['delayed_label_rows']} rows "
            f"(test {o['accuracy_reference']:.3f})"
            if "accuracy_delayed" in o
            else "-"
        )
        table.add_row(
            o["target"],
            str(o["rows"]),
            f"{o['drift_share']:.2f}",
            "[red]yes[/]" if o["drifted"] else "no",
            ("[bold red]retrain: [/]" if o["trigger"] else "") + o["decision"],
            o["reference"],
            accuracy,
        )
    console.print(table)
    if not outcomes:
        console.print("nothing to check yet: no prediction log and no fleet telemetry")
    console.print(f"dashboards: {settings.evidently_url}")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    STATE["debug"] = debug
    # Prefect and DVC print the pipeline's progress through their own loggers.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if debug:
        logging.basicConfig(level=logging.DEBUG)


def _prefect_client_env(settings: Settings) -> None:
    """Point Prefect at the stack's server before any flow module is imported."""
    from flows.services import prefect_env

    os.environ.update(prefect_env(settings))


@app.command()
def up() -> None:
    """Start the local services (MLflow, Prefect, webhook, serving) on loopback."""
    from flows.services import start_all

    settings = get_settings()
    with console.status("starting services") as status:
        states = start_all(settings, progress=status.update)
    for state in states:
        console.print(
            f"[green]{state.name}[/] {state.url}  (pid {state.pid}, log {state.log})"
        )
    if "serving" not in {state.name for state in states}:
        console.print(
            "[yellow]serving[/] waits for a champion: `edgeloop run` trains one and "
            "starts it"
        )


@app.command()
def register(params_file: ParamsOption = Path("params.yaml")) -> None:
    """Register the MLflow webhook, the Prefect deployments and the drift automation
    on running servers (what `up` does after starting them; a compose install runs
    it once)."""
    from flows.services import register_stack

    settings = get_settings()
    register_stack(settings, params_file)
    console.print(
        f"registered: webhook {settings.webhook_url} on {settings.tracking_uri}; "
        f"deployments and drift automation on {settings.prefect_api}"
    )


@app.command()
def down() -> None:
    """Stop the services `edgeloop up` started."""
    from flows.services import stop_all

    stopped = stop_all(get_settings())
    console.print("stopped: " + (", ".join(stopped) or "nothing was running"))


@app.command()
def status() -> None:
    """Show the local services and whether they answer."""
    from flows.services import service_states

    table = Table("service", "url", "pid", "state")
    for s in service_states(get_settings()):
        state = (
            "[green]up[/]"
            if s.healthy
            else ("[yellow]starting[/]" if s.running else "[red]down[/]")
        )
        table.add_row(s.name, s.url, str(s.pid or "-"), state)
    console.print(table)


@app.command()
def run(
    project: Annotated[Path, typer.Option(help="project root")] = Path("."),
) -> None:
    """Run the training pipeline once and say where to look."""
    from flows.services import is_healthy

    settings = get_settings()
    if not is_healthy(f"{settings.tracking_uri}/health"):
        raise ServiceError(
            f"MLflow at {settings.tracking_uri} is not answering",
            hint="start the services with `edgeloop up`",
        )
    _prefect_client_env(settings)
    from flows.training import training_pipeline

    result = training_pipeline(
        project_dir=str(project), tracking_uri=settings.tracking_uri
    )
    _print_result(result, settings)
    from flows.services import ensure_serving

    with console.status("serving") as status:
        serving = ensure_serving(settings, project / "params.yaml", status.update)
    if serving is not None:
        console.print(
            f"  serving:      {serving.url}/predict (champion v{result.champion})"
        )


def _print_result(result: object, settings: Settings) -> None:
    from flows.training import PipelineResult

    assert isinstance(result, PipelineResult)
    model = result.model
    table = Table("stage", "result", title="training_pipeline")
    for stage in result.stages:
        table.add_row(stage.stage, "ran" if stage.ran else "unchanged (DVC cache)")
    console.print(table)
    for key, value in model.metrics.items():
        console.print(f"  {key}: [bold]{value:.4f}[/]")
    state = "registered" if model.newly_registered else "already registered, unchanged"
    gate = result.gate
    console.print(
        "gates: "
        + (
            "[green]passed[/]"
            if gate.passed
            else "[red]failed[/]: " + "; ".join(gate.failures)
        )
        + f"; champion: v{result.champion or '-'}, challenger: "
        f"v{result.challenger or '-'}"
    )
    base = settings.tracking_uri
    console.print(
        f"model [bold]{model.name}[/] version [bold]{model.version}[/] ({state})\n"
        f"  data: raw {result.lineage.raw_data_md5}, prepared "
        f"{result.lineage.prepared_data_md5}\n"
        f"  MLflow run:   {base}/#/experiments/{model.experiment_id}"
        f"/runs/{model.run_id}\n"
        f"  MLflow model: {base}/#/models/{model.name}/versions/{model.version}\n"
        f"  Prefect run:  {settings.prefect_ui}/runs/flow-run/{result.flow_run_id}"
    )


def _registry_client(params_file: Path) -> tuple[object, str]:
    from mlflow import MlflowClient

    from components.config import load_params
    from flows.services import is_healthy

    settings = get_settings()
    if not is_healthy(f"{settings.tracking_uri}/health"):
        raise ServiceError(
            f"MLflow at {settings.tracking_uri} is not answering",
            hint="start the services with `edgeloop up`",
        )
    return MlflowClient(settings.tracking_uri), load_params(
        params_file
    ).registry.model_name


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="the model version to make champion")],
    reason: Annotated[str, typer.Option(help="why, for the alias history")] = "manual",
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Make VERSION the champion (it must have passed the gates)."""
    from flows.registry import promote as promote_version

    client, name = _registry_client(params_file)
    change = promote_version(client, name, version, reason)
    console.print(
        f"{name}: champion v{change.from_version or '-'} -> "
        f"v{change.to_version} ({change.who}: {change.why})"
    )


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="why, for the alias history")] = "manual",
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Move champion back to the version that held it before, and retarget the
    fleet to it (devices holding it in their other slot switch back at once)."""
    from flows.registry import rollback as rollback_champion

    client, name = _registry_client(params_file)
    change = rollback_champion(client, name, reason)
    console.print(f"{name}: champion v{change.from_version} -> v{change.to_version}")
    settings = get_settings()
    from flows.services import is_healthy

    if is_healthy(f"{settings.fleet_url}/health"):
        from flows.edge_release import retarget_fleet
        from flows.fleet_cli import admin

        result = retarget_fleet(
            admin(settings),
            settings.tracking_uri,
            name,
            change.to_version,
            f"edgeloop rollback: {reason}",
        )
        stopped = result["rolled_back"]
        console.print(
            f"fleet: stable v{result['stable']}"
            + (
                f"; rollout {stopped['id']} of v{stopped['version']} rolled back"
                if stopped
                else ""
            )
        )


@app.command()
def history(
    at: Annotated[
        str | None, typer.Option(help="ISO time: who was champion then")
    ] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Every alias change of the registered model; with --at, the champion at T."""
    from datetime import UTC, datetime

    from flows.registry import CHAMPION, alias_at
    from flows.registry import history as alias_history

    client, name = _registry_client(params_file)
    changes = alias_history(client, name)
    if at is not None:
        when = datetime.fromisoformat(at)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        holder = alias_at(changes, CHAMPION, when)
        console.print(
            f"{name}: champion at {when.isoformat()}: "
            + (f"v{holder}" if holder else "none")
        )
        return
    table = Table("when", "alias", "from", "to", "who", "why", title=name)
    for c in changes:
        table.add_row(
            c.when, c.alias, c.from_version or "-", c.to_version, c.who, c.why
        )
    console.print(table)


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="a .csv or .parquet data file")],
    params_file: Annotated[Path, typer.Option("--params")] = Path("params.yaml"),
    quarantine: Annotated[bool, typer.Option(help="keep a copy if it fails")] = True,
) -> None:
    """Validate a data file against the data contract (the GX suite)."""
    from components.config import load_params
    from components.errors import DataContractError
    from components.validate import check_file

    params = load_params(params_file)
    result = check_file(path, params, params.paths.quarantine if quarantine else None)
    for outcome in result.outcomes:
        console.print(outcome.summary())
    if not result.success:
        raise DataContractError(
            f"{path} does not meet the data contract",
            hint=f"details above; a copy is in {params.paths.quarantine}"
            if quarantine
            else None,
        )
    console.print(f"[green]{path}: valid[/]")


def main() -> None:
    try:
        app(standalone_mode=False)
    except EdgeloopError as exc:
        if STATE["debug"]:
            raise
        err.print(f"[red]error:[/] {exc}")
        if exc.hint:
            err.print(f"[dim]hint: {exc.hint}[/]")
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if STATE["debug"]:
            raise
        err.print(f"[red]error:[/] {type(exc).__name__}: {exc}")
        err.print("[dim]hint: rerun with --debug for the traceback[/]")
        sys.exit(1)
