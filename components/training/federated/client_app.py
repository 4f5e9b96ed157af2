"""Flower ClientApp: a thin adapter over `task.train_local`. Everything it needs comes
in the server's message (weights, hyper-parameters, the model spec, where the data
is) and the node's config (`partition-id`), so the same app runs in the simulation
engine and as a SuperNode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from components.config import FederatedConfig, PrivacyConfig
from components.training.federated.task import (
    LocalSettings,
    partition_rows,
    train_local,
)
from components.training.model import ModelSpec
from components.training.torch_train import Arrays

app = ClientApp()


def spec_from(config: ConfigRecord) -> ModelSpec:
    raw = json.loads(str(config["spec"]))
    if raw.get("image_shape"):
        raw["image_shape"] = tuple(raw["image_shape"])
    return ModelSpec(**raw)


def client_data(
    config: ConfigRecord, spec: ModelSpec, partition_id: int
) -> tuple[Arrays, ModelSpec]:
    """This client's rows of the training split, by the shared partition plan."""
    frame = pd.read_parquet(Path(str(config["train-path"])))
    label = str(config["label-column"])
    spec = replace(spec, feature_columns=[c for c in frame.columns if c != label])
    index = {c: i for i, c in enumerate(spec.classes)}
    y = frame[label].map(index).to_numpy(dtype=np.int64)
    federated = FederatedConfig.model_validate_json(str(config["federated"]))
    rows = partition_rows(y, federated, int(config["seed"]))[partition_id]
    x = frame[spec.feature_columns].to_numpy(dtype=np.float32)
    return Arrays(x=x[rows], y=y[rows]), spec


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    data, spec = client_data(
        config, spec_from(config), int(context.node_config["partition-id"])
    )
    settings = LocalSettings(
        learning_rate=float(config["learning-rate"]),
        weight_decay=float(config["weight-decay"]),
        batch_size=int(config["batch-size"]),
        local_epochs=int(config["local-epochs"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        seed=int(config["seed"]) + int(context.node_config["partition-id"]),
        dp=str(config["dp"]),
        rounds=int(config["rounds"]),
        server_round=int(config["server-round"]),
    )
    privacy = PrivacyConfig.model_validate_json(str(config["privacy"]))
    weights = msg.content["arrays"].to_torch_state_dict()
    new_weights, metrics = train_local(
        spec, {k: v.numpy() for k, v in weights.items()}, data, settings, privacy
    )
    reply = RecordDict(
        {
            "arrays": ArrayRecord(
                torch_state_dict={
                    k: torch.from_numpy(v) for k, v in new_weights.items()
                }
            ),
            "metrics": MetricRecord(metrics | {"num-examples": len(data)}),
        }
    )
    return Message(content=reply, reply_to=msg)
