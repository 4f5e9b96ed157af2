"""The registry's model behind an alias, as a device-runtime file: which version
holds the alias, its variant file downloaded and loaded, its class labels."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import ServingConfig
from components.errors import ServiceError
from components.optimization.runtime import LiteRtModel, OnnxRuntimeModel, load_runtime


@dataclass(frozen=True)
class FeatureRanges:
    """The data contract a version was trained under (its run's params), per input
    position: the allowed [low, high] (validation.column_ranges for a named
    column, else validation.feature_range; unbounded where neither names one), the
    setting that says so, and the column's name where the run names its columns."""

    low: list[float]
    high: list[float]
    setting: list[str]
    names: list[str] | None

    @classmethod
    def of_run(cls, params: dict[str, str], n_features: int) -> FeatureRanges:
        default = json.loads(params.get("validation.feature_range", "null"))
        lo, hi = default if default is not None else (-math.inf, math.inf)
        low, high = [float(lo)] * n_features, [float(hi)] * n_features
        setting = ["validation.feature_range"] * n_features
        names = json.loads(params.get("validation.feature_columns", "null"))
        names = names if names and len(names) == n_features else None
        prefix = "validation.column_ranges."
        for key, value in params.items():
            column = key.removeprefix(prefix)
            if key.startswith(prefix) and names and column in names:
                i = names.index(column)
                low[i], high[i] = (float(v) for v in json.loads(value))
                setting[i] = key
        return cls(low, high, setting, names)


@dataclass(frozen=True)
class LoadedModel:
    version: str
    variant: str
    classes: list[int | str]
    n_features: int
    runtime: OnnxRuntimeModel | LiteRtModel
    ranges: FeatureRanges

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = self.runtime.logits(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


class AliasSource:
    def __init__(self, tracking_uri: str, model_name: str, cfg: ServingConfig) -> None:
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.name, self.cfg = model_name, cfg

    def current_version(self) -> str:
        try:
            return str(
                self.client.get_model_version_by_alias(
                    self.name, self.cfg.alias
                ).version
            )
        except MlflowException:
            raise ServiceError(
                f"model {self.name!r} has no {self.cfg.alias!r} alias",
                hint="promote a version first",
            ) from None

    def load(self, version: str) -> LoadedModel:
        model_version = self.client.get_model_version(self.name, version)
        tags, run = model_version.tags, self.client.get_run(model_version.run_id)
        report = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id,
                    artifact_path="optimize/variants.json",
                    tracking_uri=self.tracking_uri,
                )
            ).read_text()
        )
        wanted = (
            tags.get("edgeloop.ship_variant", "fp32")
            if self.cfg.variant == "ship"
            else "fp32"
        )
        [variant] = [v for v in report["variants"] if v["name"] == wanted]
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path=f"variants/{variant['file']}",
            dst_path=tempfile.mkdtemp(prefix="edgeloop-serving-"),
            tracking_uri=self.tracking_uri,
        )
        runtime = load_runtime(Path(local))
        classes = json.loads(run.data.params["validation.labels"])
        n = _n_features(runtime)
        ranges = FeatureRanges.of_run(run.data.params, n)
        return LoadedModel(str(version), wanted, classes, n, runtime, ranges)


def _n_features(runtime: OnnxRuntimeModel | LiteRtModel) -> int:
    if isinstance(runtime, OnnxRuntimeModel):
        return int(runtime.session.get_inputs()[0].shape[1])
    return int(runtime.inp["shape"][1])
