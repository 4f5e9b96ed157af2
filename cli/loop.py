"""`edgeloop loop`: the closed loop on a simulated fleet, and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.console import DriftOption, ProjectOption, console, one_line_logs
from components.errors import ServiceError
from scenarios.report import fmt_share
from stack.settings import get_settings


def loop(  # noqa: PLR0917 - the command's options
    devices: Annotated[int, typer.Option(min=3, help="simulated devices")] = 50,
    cohort: Annotated[
        str,
        typer.Option(help="the cohort that drifts; auto: one not drifted before"),
    ] = "auto",
    drift: DriftOption = "auto",
    strength: Annotated[float, typer.Option()] = 3.0,
    label_rows: Annotated[int, typer.Option(help="labelled rows that arrive")] = 600,
    max_s: Annotated[float, typer.Option(help="time for retrain + rollout")] = 900,
    project: ProjectOption = Path("."),
) -> None:
    """The closed loop: fleet rollout, drift on a cohort, detection, retraining by
    the automation, and the new model on every device of that cohort."""
    # The loop runs flows: imported after the root callback set Prefect's
    # environment, and only by this command.
    from scenarios.loop import run_loop

    one_line_logs()

    settings = get_settings()
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
        f"Evidently {settings.evidently_url} | fleet console {settings.fleet_url}/ui/"
    )
    console.print(
        "  (the console's login: fleet_admin_token in "
        f"{settings.state_dir / 'secrets.json'}; `edgeloop fleet explain DEVICE` "
        "says why a device runs its model)"
    )
    if not report.outcome.startswith("loop closed"):
        raise ServiceError(report.outcome)
