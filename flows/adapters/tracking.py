"""The MLflow client side of the pipeline: one run per training, its params, metrics,
lineage and artifacts, and the registered model version."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature

from components.backends import load_classifier
from components.config import Params
from components.data.features import encoding_from_json, model_input
from components.evaluation.evaluate import CLASS_REPORT, CONFUSION, METRICS
from components.optimization.report import REPORT as OPTIMIZE_REPORT
from components.training.train import TRAINING
from stack.contracts import EXPERIMENT, TAG_PREFIX, Tag


@dataclass(frozen=True)
class Lineage:
    git_commit: str
    params_hash: str
    raw_data_md5: str
    prepared_data_md5: str
    model_md5: str
    training_mode: str
    backend: str
    privacy: dict[str, str]
    variants: dict[str, str]

    def tags(self) -> dict[str, str]:
        plain = {
            k: v for k, v in self.__dict__.items() if k not in ("privacy", "variants")
        }
        merged = plain | self.privacy | self.variants
        return {f"{TAG_PREFIX}{k}": v for k, v in merged.items()}


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
        if version.tags.get(Tag.MODEL_MD5) == model_md5:
            return version
    return None


def log_training_run(
    tracking_uri: str,
    project: Path,
    params: Params,
    lineage: Lineage,
    why: dict[str, str] | None = None,
) -> RegisteredModel:
    """Log the run (params, per-step and test metrics, data card, lineage, privacy,
    partitions, search trials, model) and register it; a model already registered
    is found, not registered twice. `why`: tags of what started the run (the drift
    event, the Prefect flow run), on the run and the version."""
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
    training = json.loads((reports / "train" / TRAINING).read_text())
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(
        run_name=f"{params.data.name}-{lineage.model_md5[:8]}"
    ) as run:
        mlflow.log_params(flatten(params.model_dump(mode="json")))
        mlflow.set_tags(
            lineage.tags() | {f"{TAG_PREFIX}data.name": params.data.name} | (why or {})
        )
        _log_history(training)
        mlflow.log_metrics(metrics | {"best_step": training["best_epoch"]})
        _log_training_details(training)
        prepared = project / params.paths.prepared
        for card in ("data_card.md", "data_card.json"):
            mlflow.log_artifact(str(prepared / card), artifact_path="data_card")
        mlflow.log_artifacts(str(reports / "validation"), artifact_path="validation")
        for report in (CLASS_REPORT, CONFUSION):
            mlflow.log_artifact(
                str(reports / "evaluate" / report), artifact_path="evaluation"
            )
        _log_variants(project / params.paths.variants, reports / "optimize")
        info = _log_model(project / params.paths.model, prepared, name)
    version = str(info.registered_model_version)
    for key, value in (lineage.tags() | (why or {})).items():
        client.set_model_version_tag(name, version, key, value)
    return RegisteredModel(
        name, version, run.info.run_id, experiment.experiment_id, metrics, True
    )


def _log_history(training: dict[str, Any]) -> None:
    """Per-epoch metrics (central) or per-round metrics (federated), by step."""
    for row in training["history"]:
        step = int(row.get("epoch", row.get("round", 0)))
        values = {k: v for k, v in row.items() if k not in ("epoch", "round")}
        prefix = "round_" if "round" in row else ""
        mlflow.log_metrics({f"{prefix}{k}": v for k, v in values.items()}, step=step)


def _log_training_details(training: dict[str, Any]) -> None:
    privacy = training.get("privacy")
    if privacy:
        mlflow.log_metrics(
            {
                "privacy_epsilon": privacy["epsilon"],
                "privacy_delta": privacy["delta"],
                "privacy_total_epsilon": training["privacy_total_epsilon"],
            }
        )
    if training.get("federated"):
        mlflow.log_dict(training["federated"], "federated/partitions.json")
    search = training.get("search")
    if search:
        for trial in search["trials"]:
            with mlflow.start_run(run_name=f"trial-{trial['number']}", nested=True):
                mlflow.log_params(trial["params"])
                mlflow.set_tag("optuna.state", trial["state"])
                if trial["state"] == "PRUNED":
                    mlflow.set_tag("optuna.pruned_at_step", str(trial["last_step"]))
                if trial["value"] is not None:
                    mlflow.log_metric("val_loss", trial["value"])
        mlflow.log_params({f"best.{k}": v for k, v in search["best_params"].items()})


def _log_variants(variants: Path, report_dir: Path) -> None:
    """The optimized files are artifacts of the same run (so of the same version),
    with each variant's measurements, and its latency in each profile's runtime,
    as metrics."""
    mlflow.log_artifacts(str(variants), artifact_path="variants")
    mlflow.log_artifacts(str(report_dir), artifact_path="optimize")
    report = json.loads((report_dir / OPTIMIZE_REPORT).read_text())
    for v in report["variants"]:
        mlflow.log_metrics(
            {
                f"variant.{v['name']}.{key}": float(v[key])
                for key in (
                    "size_bytes",
                    "gzip_bytes",
                    "parameters",
                    "macs",
                    "accuracy",
                    "accuracy_drop",
                    "latency_median_ms",
                    "latency_p95_ms",
                )
            }
            # a TFLM file's arena, as TFLM's allocator measured it
            | (
                {f"variant.{v['name']}.arena_bytes": float(v["arena_bytes"])}
                if v.get("arena_bytes") is not None
                else {}
            )
        )
    # What chose each profile's file: every fitting variant timed in the profile's
    # runtime with its threads (the MLflow UI charts them side by side).
    for profile, choice in report.get("ship_per_profile", {}).items():
        mlflow.log_metrics(
            {
                f"profile.{profile}.{name}.latency_median_ms": float(ms)
                for name, ms in choice["measured_ms"].items()
            }
        )


def variant_tags(report_dir: Path) -> dict[str, str]:
    """What the version says about its device variants: the shipped one, its gate,
    the device profiles it may go to, and each profile's measured best."""
    report = json.loads((report_dir / OPTIMIZE_REPORT).read_text())
    ship = next(v for v in report["variants"] if v["name"] == report["ship_variant"])
    return {
        "ship_variant": ship["name"],
        "ship_file": f"variants/{ship['file']}",
        "ship_accepted": str(ship["accepted"]).lower(),
        "ship_reason": ship["reason"] or "passed",
        "deployable_profiles": ",".join(ship["deployable_to"]) or "none",
        "accepted_variants": ",".join(
            v["name"] for v in report["variants"] if v["accepted"]
        ),
        # What each device profile should get, measured in its runtime with its
        # threads (components/optimization/choice.py; the measurements are in
        # variants.json): `gateway=fp32,mcu=int8_static`, `-` where nothing fits.
        "ship_per_profile": ",".join(
            f"{profile}={choice['variant'] or '-'}"
            for profile, choice in report.get("ship_per_profile", {}).items()
        )
        or "none",
        "ship_files_per_profile": ",".join(
            f"{profile}=variants/{choice['file']}"
            for profile, choice in report.get("ship_per_profile", {}).items()
            if choice["file"]
        )
        or "none",
    }


def privacy_tags(training: dict[str, Any]) -> dict[str, str]:
    """What the model version says about privacy, so nobody promotes it unaware."""
    privacy = training.get("privacy")
    if not privacy:
        return {"private": "false"}
    return {
        "private": "true",
        "privacy_epsilon": f"{privacy['epsilon']:.4f}",
        "privacy_delta": str(privacy["delta"]),
        "privacy_mechanism": privacy["mechanism"],
    }


def _log_model(model_dir: Path, prepared: Path, registered_name: str) -> Any:
    classifier = load_classifier(model_dir)
    spec = classifier.spec
    sample = pd.read_parquet(prepared / "test.parquet")[spec.feature_columns].head(5)
    # the model's input: categories by index, gaps as NaN
    encoding = encoding_from_json(spec.encoding)
    example = model_input(sample, spec.feature_columns, encoding)
    signature = infer_signature(example, classifier.predict_proba(example))
    common = {
        "name": "model",
        "registered_model_name": registered_name,
        "input_example": example,
        "signature": signature,
    }
    if spec.backend == "keras":
        # mlflow.keras 3.17 writes the input example before creating its folder;
        # the TensorFlow flavor saves the same Keras 3 model and gets that right.
        from mlflow import tensorflow as mlflow_tensorflow  # imports TensorFlow

        return mlflow_tensorflow.log_model(
            classifier.model,
            **common,
            pip_requirements=[f"tensorflow-cpu=={metadata.version('tensorflow-cpu')}"],
        )
    return mlflow.pytorch.log_model(
        classifier.model,
        **common,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        extra_files=[str(model_dir / "model.json")],
    )


def record_failed_run(
    tracking_uri: str, params: Params, stage: str, message: str
) -> str:
    """A run that failed is recorded as FAILED in MLflow (and never registered)."""
    client = MlflowClient(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(EXPERIMENT)
    run = client.create_run(
        experiment.experiment_id,
        run_name=f"{params.data.name}-failed-{stage}",
        tags={
            f"{TAG_PREFIX}failed_stage": stage,
            f"{TAG_PREFIX}error": message[:4000],
            f"{TAG_PREFIX}training_mode": params.train.mode,
        },
    )
    for key, value in flatten(params.model_dump(mode="json")).items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status="FAILED")
    return run.info.run_id
