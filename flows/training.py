"""`training_pipeline`: the DVC stages as Prefect tasks, then MLflow logging and
registration of the trained model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.context import get_run_context

from components.config import DEFAULT_PARAMS, Params, load_params
from components.errors import EdgeloopError, StageError, error_class
from components.evaluation.gates import GateDecision
from components.stage import failure_report
from components.training.train import TRAINING
from flows.adapters import dvc as dvc_stages
from flows.adapters import registry, tracking
from flows.retries import transient
from stack.contracts import TAG_PREFIX, TRIGGER_PREFIX, Alias, Tag
from stack.secrets import gate_key
from stack.settings import get_settings

MODEL_STAGES = ("train", "evaluate", "optimize")


@dataclass(frozen=True)
class PipelineResult:
    stages: list[dvc_stages.StageRun]
    model: tracking.RegisteredModel
    lineage: tracking.Lineage
    flow_run_id: str
    pushed_files: int
    gate: GateDecision
    champion: str | None
    challenger: str | None

    @property
    def skipped(self) -> list[str]:
        return [s.stage for s in self.stages if not s.ran]


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def run_stage(project: Path, stage: str, params: Params) -> dvc_stages.StageRun:
    """One DVC stage. Its failure is the stage's own report when this run wrote
    one (an earlier run's is removed first, so it never speaks for this one), else
    DVC's message, in one line."""
    logger = get_run_logger()
    report = failure_report(project / params.paths.reports, stage)
    report.unlink(missing_ok=True)
    if stage == "prepare":  # DVC dependencies: made when missing, not a failure
        (project / params.incoming_dir()).mkdir(parents=True, exist_ok=True)
        (project / params.paths.sources).mkdir(parents=True, exist_ok=True)
    try:
        result = dvc_stages.reproduce(project, stage)
    except dvc_stages.ReproductionError as exc:
        if report.exists():
            failure = json.loads(report.read_text())
            error = error_class(failure["error"])
            raise error(failure["message"], hint=failure["hint"]) from exc
        raise StageError(
            dvc_stages.message(exc), hint=f"`dvc repro {stage}` in {project}"
        ) from exc
    logger.info(
        "stage %s: %s", stage, "ran" if result.ran else "unchanged, skipped (DVC cache)"
    )
    return result


@task
def record_failure(tracking_uri: str, params: Params, stage: str, message: str) -> str:
    run_id = tracking.record_failed_run(tracking_uri, params, stage, message)
    get_run_logger().error(
        "stage %s failed; MLflow run %s marked FAILED", stage, run_id
    )
    return run_id


@task(retries=2, retry_delay_seconds=2)
def push_data(project: Path) -> int:
    return dvc_stages.push(project)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def register_model(
    tracking_uri: str, project: Path, params: Params, why: dict[str, str]
) -> tuple[tracking.RegisteredModel, tracking.Lineage]:
    hashes = dvc_stages.output_hashes(project)
    paths = params.paths
    training = json.loads((project / paths.reports / "train" / TRAINING).read_text())
    lineage = tracking.Lineage(
        git_commit=tracking.git_commit(project),
        params_hash=params.digest(),
        raw_data_md5=hashes[str(paths.raw)],
        prepared_data_md5=hashes[str(paths.prepared)],
        model_md5=hashes[str(paths.model)],
        training_mode=training["mode"],
        backend=training["backend"],
        privacy=tracking.privacy_tags(training),
        variants=tracking.variant_tags(project / paths.reports / "optimize"),
    )
    model = tracking.log_training_run(tracking_uri, project, params, lineage, why)
    get_run_logger().info(
        "model %s version %s %s",
        model.name,
        model.version,
        "registered" if model.newly_registered else "already registered (unchanged)",
    )
    return model, lineage


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def gate_version(
    tracking_uri: str, name: str, version: str, params: Params, test_split: Path
) -> GateDecision:
    decision = registry.apply_gates(
        MlflowClient(tracking_uri),
        name,
        version,
        params.registry,
        registry.TestSplit(test_split, params.data.label_column),
        key=gate_key(get_settings()),
    )
    get_run_logger().info(
        "gates for %s v%s: %s",
        name,
        version,
        "passed" if decision.passed else "failed: " + "; ".join(decision.failures),
    )
    return decision


def why_tags(trigger: dict[str, Any] | None) -> dict[str, str]:
    """What started this run, as tags for its MLflow run and model version: the
    drift event (target, share, event and Evidently snapshot ids) when the drift
    automation passed one, else the schedule or a person; and the Prefect flow run."""
    flow_run = get_run_context().flow_run
    tags = {f"{TAG_PREFIX}prefect_flow_run_id": str(flow_run.id)}
    if trigger:
        tags[Tag.TRIGGER] = "drift"
        for key in ("target", "drift_share", "event_id", "snapshot_id"):
            if trigger.get(key) is not None:
                tags[f"{TRIGGER_PREFIX}{key}"] = str(trigger[key])
    else:
        tags[Tag.TRIGGER] = "schedule" if flow_run.auto_scheduled else "manual"
    return tags


@flow(name="training_pipeline")
def training_pipeline(
    project_dir: str = ".",
    tracking_uri: str = "",
    trigger: dict[str, Any] | None = None,
) -> PipelineResult:
    """prepare -> validate -> train -> evaluate (DVC), push the data version, then
    log and register the model in MLflow (settings' server unless given).
    `trigger`: the drift event that started the run (the drift automation fills it
    in), kept on the MLflow run and version."""
    project = Path(project_dir).resolve()
    params = load_params(project / DEFAULT_PARAMS)
    tracking_uri = tracking_uri or get_settings().tracking_uri
    stages = []
    for stage in dvc_stages.STAGES:
        try:
            stages.append(run_stage(project, stage, params))
        except EdgeloopError as exc:
            if stage in MODEL_STAGES:  # data failures are in the quarantine instead
                record_failure(tracking_uri, params, stage, str(exc))
            raise
    pushed = push_data(project)
    model, lineage = register_model(tracking_uri, project, params, why_tags(trigger))
    gate = gate_version(
        tracking_uri,
        model.name,
        model.version,
        params,
        project / params.paths.prepared / "test.parquet",
    )
    client = MlflowClient(tracking_uri)
    return PipelineResult(
        stages=stages,
        model=model,
        lineage=lineage,
        flow_run_id=str(get_run_context().flow_run.id),
        pushed_files=pushed,
        gate=gate,
        champion=registry.alias_version(client, model.name, Alias.CHAMPION),
        challenger=registry.alias_version(client, model.name, Alias.CHALLENGER),
    )
