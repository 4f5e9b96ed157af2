"""The registry's model behind an alias, as a device-runtime file: which version
holds the alias, its variant file downloaded and loaded, its class labels."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import ServingConfig
from components.data.features import ColumnEncoding, encoding_from_json
from components.errors import ServiceError
from components.optimization.runtime import LiteRtModel, OnnxRuntimeModel, load_runtime
from serving.contract import FeatureRanges, RowContract
from stack.contracts import Tag
from stack.gate_seal import check_file, verified_seal
from stack.rollback_order import check_downgrade


@dataclass(frozen=True)
class LoadedModel:
    version: str
    variant: str
    classes: list[int | str]
    n_features: int
    runtime: OnnxRuntimeModel | LiteRtModel
    ranges: FeatureRanges
    encoding: tuple[ColumnEncoding, ...] = ()
    feature_columns: tuple[str, ...] = ()  # the raw columns a plain model takes

    @cached_property
    def contract(self) -> RowContract:
        return RowContract(self.version, self.n_features, self.ranges, self.encoding)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = self.runtime.logits(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


class AliasSource:
    """The registered model `model_name`'s version behind `cfg.alias`, loaded with
    `threads` ONNX Runtime threads."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        cfg: ServingConfig,
        threads: int = 1,
        gate_key: bytes | None = None,
    ) -> None:
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.name, self.cfg, self.threads = model_name, cfg, threads
        # Serving's door: with the stack's gate key, a version loads only with a
        # seal the gates made for it, and its shipped file only as they measured it.
        self.gate_key = gate_key

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

    def check_switch(self, version: str, before: str) -> None:
        """With the gate key, an older version than `before` replaces it only with
        a rollback order (DowngradeRefused, saying how, otherwise)."""
        if self.gate_key is None:
            return
        tags = self.client.get_model_version(self.name, version).tags
        check_downgrade(
            tags.get(Tag.ROLLBACK_ORDER),
            self.gate_key,
            model=self.name,
            version=str(version),
            running=before,
        )

    def load(self, version: str) -> LoadedModel:
        model_version = self.client.get_model_version(self.name, version)
        tags, run = model_version.tags, self.client.get_run(model_version.run_id)
        seal = None
        if self.gate_key is not None:
            seal = verified_seal(
                tags.get(Tag.GATE_SEAL),
                self.gate_key,
                model=self.name,
                version=str(version),
            )
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
        # The runtimes hold the model in memory: the download is not kept (one
        # folder per load was left in /tmp before).
        with tempfile.TemporaryDirectory(prefix="edgeloop-model-") as folder:
            local = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                artifact_path=f"variants/{variant['file']}",
                dst_path=folder,
                tracking_uri=self.tracking_uri,
            )
            if seal is not None and seal.ship_file == f"variants/{variant['file']}":
                check_file(seal, Path(local))
            runtime = load_runtime(Path(local), threads=self.threads)
        classes = json.loads(run.data.params["validation.labels"])
        n = _n_features(runtime)
        inputs = report.get("inputs") or {}
        encoding = tuple(encoding_from_json(inputs.get("encoding")))
        ranges = FeatureRanges.of_run(run.data.params, n, inputs.get("feature_columns"))
        columns = tuple(inputs.get("feature_columns") or ())
        return LoadedModel(
            str(version), wanted, classes, n, runtime, ranges, encoding, columns
        )


def _n_features(runtime: OnnxRuntimeModel | LiteRtModel) -> int:
    if isinstance(runtime, OnnxRuntimeModel):
        return int(runtime.session.get_inputs()[0].shape[1])
    return int(runtime.inp["shape"][1])
