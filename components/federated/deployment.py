"""Flower's deployment engine: the plan read from the project's files (so the
ServerApp needs no in-memory state), the outcome written as a model folder, and the
app's Flower configuration for `flwr run`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from components.config import load_params
from components.federated.server_app import FederatedPlan
from components.federated.task import initial_model, set_weights
from components.model import build_model, save_model
from components.train import spec_for, to_arrays

ROUNDS_FILE = "rounds.json"


def plan_from_files(params_file: Path, prepared: Path) -> FederatedPlan:
    params = load_params(params_file)
    label = params.data.label_column
    train_df = pd.read_parquet(prepared / "train.parquet")
    spec = spec_for(params, train_df)
    train = to_arrays(train_df, spec, label)
    test = to_arrays(pd.read_parquet(prepared / "test.parquet"), spec, label)
    return FederatedPlan(
        spec=spec,
        cfg=params.train,
        initial=initial_model(spec, train.x, params.train.seed),
        train_path=str((prepared / "train.parquet").resolve()),
        label_column=label,
        test=test,
    )


def write_outcome(plan: FederatedPlan, out: Path) -> None:
    if plan.final_weights is None:
        raise RuntimeError("the federated run ended without a global model")
    model = build_model(plan.spec)
    set_weights(model, plan.final_weights)
    save_model(model, plan.spec, out)
    (out / ROUNDS_FILE).write_text(json.dumps(plan.rounds_log, indent=1) + "\n")
