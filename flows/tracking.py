"""The MLflow client side of the pipeline: one run per training, its params, metrics,
lineage and artifacts, and the registered model version."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature

from components.config import Params
from components.evaluate import CLASS_REPORT, CONFUSION, METRICS
from components.model import load_model, predict_proba
from components.train import HISTORY

EXPERIMENT = "edgeloop-training"
TAG = "edgeloop."


@dataclass(frozen=True)
class Lineage:
    git_commit: str
    params_hash: str
    raw_data_md5: str
    prepared_data_md5: str
    model_md5: str
    training_mode: str = "central"

    def tags(self) -> dict[str, str]:
        return {f"{TAG}{k}": v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    newly_registered: bool


def git_commit(project: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        check=False,
        cwd=project,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def find_version(client: MlflowClient, name: str, model_md5: str) -> Any | None:
    """The registered version already holding this exact model, if any."""
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get(f"{TAG}model_md5") == model_md5:
            return version
    return None


def log_training_run(
    tracking_uri: str, project: Path, params: Params, lineage: Lineage
) -> RegisteredModel:
    """Log the run (params, per-epoch and test metrics, data card, lineage, model)
    and register it; a model already registered is found, not registered twice."""
    client = MlflowClient(tracking_uri)
    name = params.registry.model_name
    reports = project / params.paths.reports
    metrics = json.loads((reports / "evaluate" / METRICS).read_text())
    existing = find_version(client, name, lineage.model_md5)
    if existing is not None:
        run = client.get_run(existing.run_id)
        return RegisteredModel(
            name,
            existing.version,
            existing.run_id,
            run.info.experiment_id,
            metrics,
            False,
        )
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(
        run_name=f"{params.data.name}-{lineage.model_md5[:8]}"
    ) as run:
        mlflow.log_params(flatten(params.model_dump(mode="json")))
        mlflow.set_tags(lineage.tags() | {f"{TAG}data.name": params.data.name})
        history = json.loads((reports / "train" / HISTORY).read_text())
        for row in history["epochs"]:
            step = int(row["epoch"])
            mlflow.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}, step=step
            )
        mlflow.log_metrics(metrics | {"best_epoch": history["best_epoch"]})
        prepared = project / params.paths.prepared
        for card in ("data_card.md", "data_card.json"):
            mlflow.log_artifact(str(prepared / card), artifact_path="data_card")
        mlflow.log_artifacts(str(reports / "validation"), artifact_path="validation")
        for report in (CLASS_REPORT, CONFUSION):
            mlflow.log_artifact(
                str(reports / "evaluate" / report), artifact_path="evaluation"
            )
        info = _log_model(project / params.paths.model, prepared, name)
    version = str(info.registered_model_version)
    for key, value in lineage.tags().items():
        client.set_model_version_tag(name, version, key, value)
    return RegisteredModel(
        name, version, run.info.run_id, experiment.experiment_id, metrics, True
    )


def _log_model(model_dir: Path, prepared: Path, registered_name: str) -> Any:
    model, spec = load_model(model_dir)
    sample = pd.read_parquet(prepared / "test.parquet")[spec.feature_columns].head(5)
    example = sample.to_numpy(dtype="float32")
    signature = infer_signature(example, predict_proba(model, example))
    return mlflow.pytorch.log_model(
        model,
        name="model",
        registered_model_name=registered_name,
        input_example=example,
        signature=signature,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        extra_files=[str(model_dir / "model.json")],
    )
