"""`edgeloop run | validate`: the training pipeline once, a data file against the
data contract."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import ParamsOption, ProjectOption, console, one_line_logs
from components.config import load_params
from components.errors import DataContractError, GateRefused, ServiceError
from components.evaluation.gates import GateDecision
from stack.net import is_healthy
from stack.settings import Settings, get_settings
from stack.supervisor import ensure_serving

if TYPE_CHECKING:
    from flows.training import PipelineResult


def run(project: ProjectOption = Path(".")) -> None:
    """Run the training pipeline once and say where to look."""
    # Prefect, MLflow and torch, imported with the flow: after the root callback set
    # Prefect's environment, and only by the commands that run a flow.
    from flows.training import training_pipeline

    one_line_logs()

    settings = get_settings()
    if not is_healthy(f"{settings.tracking_uri}/health"):
        raise ServiceError(
            f"MLflow at {settings.tracking_uri} is not answering",
            hint="start the services with `edgeloop up`",
        )
    result = training_pipeline(
        project_dir=str(project), tracking_uri=settings.tracking_uri
    )
    print_result(result, settings)
    with console.status("serving") as status:
        serving = ensure_serving(settings, project / "params.yaml", status.update)
    if serving is not None:  # what the service says it answers with
        routes = "/predict"
        if load_params(project / "params.yaml").data.spoken is not None:
            routes += f" and {serving.url}/listen (a WAV clip)"
        console.print(
            f"  serving:      {serving.url}{routes} answers {serving.model_name} "
            f"v{serving.model_version}"
        )
    refused(result.model.name, result.model.version, result.gate)


def refused(name: str, version: str, gate: GateDecision) -> None:
    """A version the gates refused ends the command non-zero, naming the keys."""
    if gate.passed:
        return
    keys = sorted({failure.split(":", 1)[0] for failure in gate.failures})
    raise GateRefused(
        f"{name} v{version} was refused by the gates: " + "; ".join(gate.failures),
        hint=f"improve the model, or change {', '.join(keys)} in params.yaml: the "
        "next `edgeloop run` judges the version again",
    )


def print_result(result: PipelineResult, settings: Settings) -> None:
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


def validate(
    path: Annotated[Path, typer.Argument(help="a .csv or .parquet data file")],
    params_file: ParamsOption = Path("params.yaml"),
    quarantine: Annotated[bool, typer.Option(help="keep a copy if it fails")] = True,
) -> None:
    """Validate a data file against the data contract (the GX suite)."""
    # Great Expectations takes seconds to import: only this command pays for it.
    from components.data.validate import check_file

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
