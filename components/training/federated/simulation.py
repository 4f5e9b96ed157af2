"""Run the ClientApp/ServerApp pair in Flower's simulation engine, one virtual
SuperNode per partition, and turn the outcome into a normal TrainResult."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.simulation import run_simulation

from components.config import TrainConfig
from components.errors import TrainingError
from components.training.federated import client_app
from components.training.federated.server_app import FederatedPlan, make_server_app
from components.training.federated.task import (
    initial_model,
    label_histograms,
    partition_rows,
    set_weights,
)
from components.training.model import ModelSpec, build_model
from components.training.privacy import PrivacySpent, spent
from components.training.torch_train import Arrays, TrainResult

log = logging.getLogger("edgeloop.federated")


def planned_central_dp(cfg: TrainConfig) -> PrivacySpent:
    """Client-level (epsilon, delta) of DP-FedAvg with fixed clipping: a subsampled
    Gaussian mechanism per round, accounted by Opacus' RDP accountant."""
    fed = cfg.federated
    sampled = max(2, int(fed.num_clients * fed.fraction_fit))
    return spent(
        fed.noise_multiplier,
        sampled / fed.num_clients,
        fed.rounds,
        cfg.privacy.target_delta,
        "flower_central_fixed_clipping",
    )


def federated_privacy(cfg: TrainConfig, rounds_log: list[dict]) -> PrivacySpent | None:
    """The run's privacy: planned for central DP, as the clients' Opacus accountants
    reported it in the last round for client DP, None without DP."""
    fed = cfg.federated
    if fed.dp == "central_fixed_clipping":
        return planned_central_dp(cfg)
    if fed.dp == "client_opacus":
        last = rounds_log[-1]
        return PrivacySpent(
            epsilon=float(last["clients_epsilon"]),
            delta=cfg.privacy.target_delta,
            noise_multiplier=float(last["clients_noise_multiplier"]),
            sample_rate=float("nan"),
            steps=fed.rounds * fed.local_epochs,
            mechanism="flower_client_opacus",
        )
    return None


def run_federated(
    train: Arrays,
    test: Arrays,
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    train_path: Path,
    label_column: str,
) -> TrainResult:
    fed = cfg.federated
    parts = partition_rows(train.y, fed, cfg.seed)
    histograms = label_histograms(train.y, parts, len(spec.classes))
    log.info(
        "federated: %d clients, %s partitions, sizes %s",
        fed.num_clients,
        fed.partition.kind,
        [len(p) for p in parts],
    )
    plan = FederatedPlan(
        spec=spec,
        cfg=cfg,
        initial=initial_model(spec, train.x, cfg.seed),
        train_path=str(train_path.resolve()),
        label_column=label_column,
        test=test,
    )
    run_simulation(
        server_app=make_server_app(plan),
        client_app=client_app.app,
        num_supernodes=fed.num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"include_dashboard": False, "log_to_driver": False},
        },
    )
    if plan.final_weights is None:
        raise TrainingError(
            "the federated run ended without a global model",
            hint="see the Flower log above",
        )
    model = build_model(spec)
    set_weights(model, plan.final_weights)
    model.eval()
    return TrainResult(
        model=model,
        spec=spec,
        history=plan.rounds_log,
        best_epoch=fed.rounds,
        privacy=federated_privacy(cfg, plan.rounds_log),
        details={
            "partitions": {
                "kind": fed.partition.kind,
                "alpha": fed.partition.alpha,
                "sizes": [int(len(p)) for p in parts],
                "label_histograms": histograms,
            },
            "rounds": fed.rounds,
        },
    )
