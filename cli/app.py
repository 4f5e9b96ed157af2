"""The `edgeloop` Typer app: its commands (one module per group) and the root
callback, which sets the stack's Prefect environment once, before any command runs
(Prefect reads it when first imported, which only the commands that run a flow do)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from cli import data, drift, fleet, loop, pipeline, registry, services, state
from cli.console import DEBUG, err
from components.errors import EdgeloopError
from components.stage import VERBOSE
from stack.services import use_stack_credentials
from stack.settings import get_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="edgeloop: versioned data to a fleet of edge devices and back.",
)
STATE = {"debug": False}

for command in (
    services.up,
    services.down,
    services.status,
    services.register,
    pipeline.run,
    pipeline.validate,
    registry.promote,
    registry.rollback,
    registry.history,
    loop.loop,
):
    app.command()(command)
app.add_typer(fleet.fleet_app, name="fleet")
app.add_typer(drift.drift_app, name="drift")
app.add_typer(data.data_app, name="data")
app.add_typer(state.state_app, name="state")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="the libraries' log lines and warnings on the console too (else "
            "in reports/logs/<stage>.log)",
        ),
    ] = False,
) -> None:
    STATE["debug"] = debug
    DEBUG["on"] = debug
    if verbose:  # inherited by the stages DVC runs (components/stage.py)
        os.environ[VERBOSE] = "1"
    # Prefect and DVC print the pipeline's progress through their own loggers.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Every flow a command runs talks to the stack's Prefect server, and every
    # MLflow client as the stack's service user (unless the caller names a user).
    use_stack_credentials(get_settings())
    if debug:
        logging.basicConfig(level=logging.DEBUG)


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
    except Exception as exc:
        if STATE["debug"]:
            raise
        err.print(f"[red]error:[/] {type(exc).__name__}: {exc}")
        err.print("[dim]hint: rerun with --debug for the traceback[/]")
        sys.exit(1)
