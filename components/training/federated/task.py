"""What a federated client and the server compute, without Flower: partitions of the
training split (Flower Datasets' partitioners), local training, central evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner
from opacus import PrivacyEngine

from components.config import FederatedConfig, PrivacyConfig
from components.errors import TrainingError
from components.training.model import ModelSpec, build_model
from components.training.privacy import noise_for, spent
from components.training.torch_train import (
    Arrays,
    check_finite,
    evaluate_arrays,
    loader_for,
    make_private_model,
    train_epoch,
    unwrap,
)

ROW = "_row"
LABEL = "_label"


def partitioner_for(cfg: FederatedConfig, seed: int) -> Partitioner:
    if cfg.partition.kind == "dirichlet":
        return DirichletPartitioner(
            num_partitions=cfg.num_clients,
            partition_by=LABEL,
            alpha=cfg.partition.alpha,
            min_partition_size=2,
            self_balancing=False,
            seed=seed,
        )
    return IidPartitioner(num_partitions=cfg.num_clients)


def partition_rows(y: np.ndarray, cfg: FederatedConfig, seed: int) -> list[np.ndarray]:
    """Row indices of the training split held by each client."""
    if cfg.num_clients > len(y):
        raise TrainingError(
            f"train.federated.num_clients={cfg.num_clients} exceeds the "
            f"{len(y)} training rows; each client needs data",
            hint="lower num_clients",
        )
    order = np.random.default_rng(seed).permutation(len(y))  # IID needs a shuffle
    frame = pd.DataFrame({ROW: order, LABEL: y[order]})
    partitioner = partitioner_for(cfg, seed)
    partitioner.dataset = Dataset.from_pandas(frame, preserve_index=False)
    try:
        return [
            np.asarray(partitioner.load_partition(i)[ROW], dtype=np.int64)
            for i in range(cfg.num_clients)
        ]
    except ValueError as exc:  # Dirichlet could not give every client enough rows
        raise TrainingError(
            f"cannot partition {len(y)} rows into {cfg.num_clients} clients: {exc}"
        ) from None


def label_histograms(
    y: np.ndarray, parts: list[np.ndarray], n_classes: int
) -> list[list[int]]:
    return [np.bincount(y[p], minlength=n_classes).tolist() for p in parts]


def get_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in unwrap(model).state_dict().items()}


def set_weights(model: torch.nn.Module, weights: dict[str, np.ndarray]) -> None:
    unwrap(model).load_state_dict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}
    )


def initial_model(spec: ModelSpec, train_x: np.ndarray, seed: int) -> torch.nn.Module:
    """The global model every client starts from: standardized on the whole split.
    (A deployment would agree these statistics with a federated analytics round.)"""
    torch.manual_seed(seed)
    model = build_model(spec)
    model[0].fit(torch.from_numpy(train_x))
    return model


@dataclass(frozen=True)
class LocalSettings:
    """What the server sends each client in a round."""

    learning_rate: float
    weight_decay: float
    batch_size: int
    local_epochs: int
    proximal_mu: float
    seed: int
    dp: str
    rounds: int
    server_round: int


def train_local(
    spec: ModelSpec,
    weights: dict[str, np.ndarray],
    data: Arrays,
    settings: LocalSettings,
    privacy: PrivacyConfig,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Local epochs from the global weights; with client_opacus, DP-SGD whose noise
    spends privacy.target_epsilon over all rounds of this client."""
    torch.manual_seed(settings.seed + settings.server_round)
    model = build_model(spec)
    set_weights(model, weights)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    loader = loader_for(
        data, settings.batch_size, settings.seed + settings.server_round
    )
    metrics: dict[str, float] = {}
    if settings.dp == "client_opacus":
        model = make_private_model(model)
        optimizer = torch.optim.Adam(
            model.parameters(),
            lr=settings.learning_rate,
            weight_decay=settings.weight_decay,
        )
        sample_rate = 1 / len(loader)
        total_steps = settings.rounds * settings.local_epochs * len(loader)
        noise = noise_for(
            privacy.target_epsilon, privacy.target_delta, sample_rate, total_steps
        )
        model, optimizer, loader = PrivacyEngine(accountant="rdp").make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=privacy.max_grad_norm,
            noise_generator=torch.Generator().manual_seed(settings.seed),
        )
        used = spent(
            noise,
            sample_rate,
            settings.server_round * settings.local_epochs * len(loader),
            privacy.target_delta,
            "client_opacus",
        )
        metrics["epsilon"] = used.epsilon
        metrics["noise_multiplier"] = noise
    anchor = [p.detach().clone() for p in model.parameters()]
    proximal = (settings.proximal_mu, anchor) if settings.proximal_mu > 0 else None
    loss = 0.0
    for _ in range(settings.local_epochs):
        loss = train_epoch(model, loader, optimizer, proximal)
        check_finite(loss, f"round {settings.server_round} on a client")
    metrics["train_loss"] = loss
    return get_weights(model), metrics


def evaluate_weights(
    spec: ModelSpec, weights: dict[str, np.ndarray], data: Arrays
) -> dict[str, float]:
    model = build_model(spec)
    set_weights(model, weights)
    return evaluate_arrays(model, data)
