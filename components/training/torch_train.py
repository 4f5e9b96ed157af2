"""Central PyTorch training: mini-batch SGD-family optimizers, early stopping on
validation loss, and DP-SGD through Opacus' PrivacyEngine when privacy is on."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from components.config import TrainConfig
from components.errors import TrainingError
from components.metrics import classification_metrics
from components.training.model import ModelSpec, build_model, set_seeds
from components.training.privacy import PrivacySpent

log = logging.getLogger("edgeloop.train")

# Called after each epoch with (epoch, validation loss); may raise to stop a trial.
EpochHook = Callable[[int, float], None]


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TrainResult:
    model: Any
    spec: ModelSpec
    history: list[dict[str, float]]
    best_epoch: int
    privacy: PrivacySpent | None = None
    details: dict[str, Any] = field(default_factory=dict)


# A central trainer of either backend: (train, val, spec, cfg, hook) -> result.
Trainer = Callable[
    ["Arrays", "Arrays", ModelSpec, TrainConfig, EpochHook | None], "TrainResult"
]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    kinds = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
    }
    return kinds[cfg.optimizer](
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )


def loader_for(data: Arrays, batch_size: int, seed: int) -> DataLoader:
    return DataLoader(
        TensorDataset(torch.from_numpy(data.x), torch.from_numpy(data.y)),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def evaluate_arrays(model: nn.Module, data: Arrays) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(data.y)).item()
    return {"loss": loss} | classification_metrics(data.y, logits.argmax(1).numpy())


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    proximal: tuple[float, list[torch.Tensor]] | None = None,
) -> float:
    """One pass; `proximal` = (mu, global weights) adds FedProx's proximal term."""
    model.train()
    total, count = 0.0, 0
    for xb, yb in loader:
        if len(yb) == 0:  # Poisson sampling (DP) can draw an empty batch
            continue
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        if proximal is not None:
            mu, anchor = proximal
            params = [p for p in model.parameters() if p.requires_grad]
            loss = loss + mu / 2 * sum(
                (p - a).pow(2).sum() for p, a in zip(params, anchor, strict=True)
            )
        loss.backward()
        optimizer.step()
        total += loss.item() * len(yb)
        count += len(yb)
    return total / max(count, 1)


def check_finite(loss: float, where: str) -> None:
    if not math.isfinite(loss):
        raise TrainingError(
            f"training diverged at {where} (loss {loss})",
            hint="lower train.learning_rate (or raise max_grad_norm under DP)",
        )


def make_private_model(model: nn.Module) -> nn.Module:
    """Opacus' own fixer swaps layers DP-SGD cannot handle (BatchNorm -> GroupNorm)."""
    from opacus.validators import ModuleValidator  # Opacus: private modes only

    model = ModuleValidator.fix(model)
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise TrainingError(f"model is not DP-compatible: {errors[0]}")
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside Opacus' GradSampleModule."""
    return getattr(model, "_module", model)


def train_torch(
    train: Arrays,
    val: Arrays,
    spec: ModelSpec,
    cfg: TrainConfig,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train with early stopping on validation loss; keeps the best epoch's weights."""
    set_seeds(cfg.seed)
    model: nn.Module = build_model(spec)
    model[0].fit(torch.from_numpy(train.x))
    loader = loader_for(train, cfg.batch_size, cfg.seed)
    engine = None
    if cfg.privacy.enabled:
        model, optimizer, loader, engine = make_private(model, loader, cfg)
    else:
        optimizer = make_optimizer(model, cfg)
    history: list[dict[str, float]] = []
    best = (math.inf, 0, _snapshot(model))
    for epoch in range(1, cfg.epochs + 1):
        train_loss = train_epoch(model, loader, optimizer)
        check_finite(train_loss, f"epoch {epoch}")
        val_metrics = evaluate_arrays(model, val)
        row = {"epoch": epoch, "train_loss": train_loss}
        row |= {f"val_{k}": v for k, v in val_metrics.items()}
        if engine is not None:
            row["privacy_epsilon"] = engine.get_epsilon(cfg.privacy.target_delta)
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, val_metrics["loss"])
        if val_metrics["loss"] < best[0]:
            best = (val_metrics["loss"], epoch, _snapshot(model))
        elif epoch - best[1] >= cfg.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best[1])
            break
    plain = unwrap(model)
    plain.load_state_dict(best[2])
    plain.eval()
    privacy = None
    if engine is not None:
        privacy = PrivacySpent(
            epsilon=float(engine.get_epsilon(cfg.privacy.target_delta)),
            delta=cfg.privacy.target_delta,
            noise_multiplier=float(optimizer.noise_multiplier),
            sample_rate=1 / len(loader),
            steps=len(history) * len(loader),
            mechanism="opacus_dp_sgd",
        )
    return TrainResult(plain, spec, history, best[1], privacy)


def make_private(model: nn.Module, loader: DataLoader, cfg: TrainConfig) -> tuple:
    """Model, optimizer and loader wrapped by Opacus for DP-SGD at the target
    epsilon over the configured epochs, and its privacy engine (RDP accountant)."""
    from opacus import PrivacyEngine  # Opacus: private modes only

    model = make_private_model(model)
    optimizer = make_optimizer(model, cfg)
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=cfg.privacy.target_epsilon,
        target_delta=cfg.privacy.target_delta,
        epochs=cfg.epochs,
        max_grad_norm=cfg.privacy.max_grad_norm,
        noise_generator=torch.Generator().manual_seed(cfg.seed),
    )
    return model, optimizer, loader, engine


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}
