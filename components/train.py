"""Stage `train`: a PyTorch classifier on the prepared splits, with early stopping on
validation loss; writes the model folder and the per-epoch history."""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from components.config import Params, TrainConfig
from components.data import feature_columns
from components.errors import TrainingError
from components.metrics import classification_metrics
from components.model import ModelSpec, build_model, save_model, set_seeds
from components.stage import exit_with, run_stage, stage_parser

log = logging.getLogger("edgeloop.train")
HISTORY = "history.json"


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    model: nn.Sequential
    spec: ModelSpec
    history: list[dict[str, float]]
    best_epoch: int


def to_arrays(frame: pd.DataFrame, spec: ModelSpec, label: str) -> Arrays:
    """Features in the spec's column order; labels as indices into spec.classes."""
    index = {c: i for i, c in enumerate(spec.classes)}
    y = frame[label].map(index)
    if y.isna().any():
        unknown = sorted(set(frame[label][y.isna()]))
        raise TrainingError(f"labels {unknown} are not in validation.labels")
    x = frame[spec.feature_columns].to_numpy(dtype=np.float32)
    return Arrays(x=x, y=y.to_numpy(dtype=np.int64))


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    kinds = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
    }
    return kinds[cfg.optimizer](
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )


def _evaluate(model: nn.Module, data: Arrays) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(data.y)).item()
    return {"loss": loss} | classification_metrics(data.y, logits.argmax(1).numpy())


def train_model(
    train: Arrays, val: Arrays, spec: ModelSpec, cfg: TrainConfig
) -> TrainResult:
    """Train with early stopping on validation loss; the best epoch's weights."""
    set_seeds(cfg.seed)
    model = build_model(spec)
    model[0].fit(torch.from_numpy(train.x))
    loader = DataLoader(
        TensorDataset(torch.from_numpy(train.x), torch.from_numpy(train.y)),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    optimizer, loss_fn = _optimizer(model, cfg), nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    best = (math.inf, 0, {k: v.clone() for k, v in model.state_dict().items()})
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        train_loss = total / len(train.y)
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged at epoch {epoch} (loss {train_loss})",
                hint="lower train.learning_rate",
            )
        val_metrics = _evaluate(model, val)
        history.append(
            {"epoch": epoch, "train_loss": train_loss}
            | {f"val_{k}": v for k, v in val_metrics.items()}
        )
        if val_metrics["loss"] < best[0]:
            best = (
                val_metrics["loss"],
                epoch,
                {k: v.clone() for k, v in model.state_dict().items()},
            )
        elif epoch - best[1] >= cfg.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best[1])
            break
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model=model, spec=spec, history=history, best_epoch=best[1])


def spec_for(params: Params, train_frame: pd.DataFrame) -> ModelSpec:
    features = feature_columns(train_frame, params.data.label_column)
    return ModelSpec(
        n_features=len(features),
        classes=list(params.validation.labels),
        feature_columns=features,
        hidden_units=params.train.hidden_units,
        image_shape=params.data.image_shape,
    )


def _body(args: argparse.Namespace, params: Params) -> None:
    prepared = args.prepared or params.paths.prepared
    out, reports = args.out or params.paths.model, args.reports or params.paths.reports
    label = params.data.label_column
    train_df = pd.read_parquet(prepared / "train.parquet")
    val_df = pd.read_parquet(prepared / "val.parquet")
    spec = spec_for(params, train_df)
    result = train_model(
        to_arrays(train_df, spec, label),
        to_arrays(val_df, spec, label),
        spec,
        params.train,
    )
    save_model(result.model, spec, out)
    (reports / "train").mkdir(parents=True, exist_ok=True)
    (reports / "train" / HISTORY).write_text(
        json.dumps(
            {"best_epoch": result.best_epoch, "epochs": result.history}, indent=1
        )
    )
    last = result.history[result.best_epoch - 1]
    log.info(
        "trained %s: best epoch %d, val accuracy %.4f",
        spec.kind,
        result.best_epoch,
        last["val_accuracy"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("train", __doc__ or "")
    for name in ("prepared", "out", "reports"):
        parser.add_argument(f"--{name}", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
