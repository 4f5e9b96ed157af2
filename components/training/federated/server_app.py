"""Flower ServerApp: FedAvg or FedProx (optionally wrapped in Flower's server-side
fixed-clipping DP), the global model evaluated on the central test split each round."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedProx,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from components.config import PrivacyConfig, TrainConfig
from components.training.federated.task import evaluate_weights, get_weights
from components.training.model import ModelSpec
from components.training.torch_train import Arrays


@dataclass
class FederatedPlan:
    """Everything the server needs, handed to the app factory (no module state)."""

    spec: ModelSpec
    cfg: TrainConfig
    initial: torch.nn.Module
    train_path: str
    label_column: str
    test: Arrays
    rounds_log: list[dict[str, float]] = field(default_factory=list)
    final_weights: dict[str, np.ndarray] | None = None

    @property
    def sampled_clients(self) -> int:
        fed = self.cfg.federated
        return max(2, int(fed.num_clients * fed.fraction_fit))


def _aggregate_train_metrics(records: list[RecordDict], key: str) -> MetricRecord:
    """Weighted means, except epsilon: the most any client has spent."""
    merged = aggregate_metricrecords(records, key)
    epsilons = [
        float(m["epsilon"])
        for r in records
        for m in r.metric_records.values()
        if "epsilon" in m
    ]
    if epsilons:
        merged["epsilon"] = max(epsilons)
    return merged


def build_strategy(plan: FederatedPlan) -> Strategy:
    fed = plan.cfg.federated
    common = {
        "fraction_train": fed.fraction_fit,
        "fraction_evaluate": 0.0,
        "min_train_nodes": plan.sampled_clients,
        "min_available_nodes": fed.num_clients,
        "train_metrics_aggr_fn": _aggregate_train_metrics,
    }
    strategy: Strategy = (
        FedProx(proximal_mu=fed.strategy.mu, **common)
        if fed.strategy.kind == "fedprox"
        else FedAvg(**common)
    )
    if fed.dp == "central_fixed_clipping":
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=fed.noise_multiplier,
            clipping_norm=fed.clipping_norm,
            num_sampled_clients=plan.sampled_clients,
        )
    return strategy


def train_config(plan: FederatedPlan) -> ConfigRecord:
    cfg, fed = plan.cfg, plan.cfg.federated
    privacy: PrivacyConfig = cfg.privacy
    return ConfigRecord(
        {
            # Feature columns are the data's own (all but the label): not sent.
            "spec": json.dumps(asdict(plan.spec) | {"feature_columns": []}),
            "train-path": plan.train_path,
            "label-column": plan.label_column,
            "federated": fed.model_dump_json(),
            "privacy": privacy.model_dump_json(),
            "learning-rate": cfg.learning_rate,
            "weight-decay": cfg.weight_decay,
            "batch-size": cfg.batch_size,
            "local-epochs": fed.local_epochs,
            "seed": cfg.seed,
            "dp": fed.dp,
            "rounds": fed.rounds,
        }
    )


def run_plan(grid: Grid, plan: FederatedPlan) -> None:
    """Run the strategy for the plan's rounds; fills plan.rounds_log/final_weights."""

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        weights = {k: v.numpy() for k, v in arrays.to_torch_state_dict().items()}
        scores = evaluate_weights(plan.spec, weights, plan.test)
        plan.rounds_log.append(
            {"round": server_round} | {f"test_{k}": v for k, v in scores.items()}
        )
        return MetricRecord({f"test_{k}": v for k, v in scores.items()})

    initial = {k: torch.from_numpy(v) for k, v in get_weights(plan.initial).items()}
    result = build_strategy(plan).start(
        grid=grid,
        initial_arrays=ArrayRecord(torch_state_dict=initial),
        num_rounds=plan.cfg.federated.rounds,
        train_config=train_config(plan),
        evaluate_fn=central_evaluate,
    )
    for rnd, metrics in result.train_metrics_clientapp.items():
        for row in plan.rounds_log:
            if row["round"] == rnd:
                row.update({f"clients_{k}": float(v) for k, v in metrics.items()})
    plan.final_weights = {
        k: v.numpy() for k, v in result.arrays.to_torch_state_dict().items()
    }


def make_server_app(plan: FederatedPlan) -> ServerApp:
    """A ServerApp over an in-memory plan (the simulation engine's way)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_plan(grid, plan)

    return app
