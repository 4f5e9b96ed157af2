"""Flower's deployment engine: its ServerApp (`app`, what `flwr run` starts on a
SuperLink), the plan read from the project's files (so the ServerApp needs no
in-memory state) and the outcome written as a model folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from components.config import load_params
from components.training.federated.server_app import FederatedPlan, run_plan
from components.training.federated.task import initial_model, set_weights
from components.training.inputs import spec_for, to_arrays
from components.training.model import build_model, save_model

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


# The deployment engine's ServerApp (`flwr run` against a SuperLink): the plan comes
# from the project's files named in the run config, the result goes to `out-dir`.
app = ServerApp()


@app.main()
def deployed_main(grid: Grid, context: Context) -> None:
    config = context.run_config
    plan = plan_from_files(
        Path(str(config["params-file"])), Path(str(config["prepared-dir"]))
    )
    run_plan(grid, plan)
    write_outcome(plan, Path(str(config["out-dir"])))
