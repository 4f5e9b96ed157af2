"""`edgeloop drift check`: the monitor flow once, its outcome per target."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.console import ProjectOption, console, one_line_logs
from stack.net import is_healthy
from stack.services import evidently_workspace
from stack.settings import get_settings

drift_app = typer.Typer(no_args_is_help=True, help="drift monitoring (Evidently)")


@drift_app.command("check")
def check(project: ProjectOption = Path(".")) -> None:
    """Run the monitor flow once: serving's log and every fleet cohort against the
    champion's reference, accuracy on delayed labels; snapshots to the Evidently
    workspace; an event on drift."""
    # Prefect reads its environment when imported: the flow is imported after the
    # root callback set it (and Evidently, torch and MLflow only by this command).
    from flows.monitor import monitor

    one_line_logs()

    settings = get_settings()
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
            f"{o.accuracy_delayed:.3f} on {o.delayed_label_rows} rows "
            f"(test {o.accuracy_reference:.3f})"
            if o.accuracy_delayed is not None
            else "-"
        )
        table.add_row(
            o.target,
            str(o.rows),
            f"{o.drift_share:.2f}",
            "[red]yes[/]" if o.drifted else "no",
            ("[bold red]retrain: [/]" if o.trigger else "") + o.decision,
            o.reference,
            accuracy,
        )
    console.print(table)
    if not outcomes:
        console.print("nothing to check yet: no prediction log and no fleet telemetry")
    console.print(f"dashboards: {settings.evidently_url}")
