"""Stage `train`: central (PyTorch or Keras), private (Opacus DP-SGD) or federated
(Flower) training as params say, optionally after an Optuna search; writes the model
folder and `training.json` (history, mode, privacy spent, partitions, trials)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from components.config import Params, TrainConfig
from components.stage import exit_with, run_stage, stage_parser
from components.training.inputs import spec_for, to_arrays
from components.training.model import save_model
from components.training.privacy import PrivacyLedger
from components.training.torch_train import Trainer, TrainResult, train_torch

log = logging.getLogger("edgeloop.train")
TRAINING = "training.json"


def central_trainer(cfg: TrainConfig) -> Trainer:
    if cfg.backend == "keras":
        # TensorFlow only when asked.
        from components.training.keras_train import train_keras

        return train_keras
    return train_torch


def planned_epsilon(cfg: TrainConfig) -> float:
    """The epsilon a run is set to spend, known before it starts (0 without DP)."""
    if cfg.mode == "private" or cfg.federated.dp == "client_opacus":
        return cfg.privacy.target_epsilon
    if cfg.federated.dp == "central_fixed_clipping":
        # Flower, imported only for a federated run.
        from components.training.federated.simulation import planned_central_dp

        return planned_central_dp(cfg).epsilon
    return 0.0


def train(params: Params, prepared: Path) -> tuple[TrainResult, dict[str, Any]]:
    """Train in the mode params ask for; returns the result and the search record."""
    cfg, label = params.train, params.data.label_column
    train_df = pd.read_parquet(prepared / "train.parquet")
    val_df = pd.read_parquet(prepared / "val.parquet")
    spec = spec_for(params, train_df)
    train_xy, val_xy = to_arrays(train_df, spec, label), to_arrays(val_df, spec, label)
    if cfg.federated.enabled:
        # Flower + Ray, imported only for a federated run.
        from components.training.federated.simulation import run_federated

        test_xy = to_arrays(pd.read_parquet(prepared / "test.parquet"), spec, label)
        return run_federated(
            train_xy,
            test_xy,
            spec,
            cfg,
            train_path=prepared / "train.parquet",
            label_column=label,
        ), {}
    trainer = central_trainer(cfg)
    search: dict[str, Any] = {}
    if cfg.search.enabled:
        from components.training.search import run_search  # Optuna only when asked

        found = run_search(train_xy, val_xy, spec, cfg, trainer)
        search = asdict(found)
        cfg = cfg.model_copy(update=found.best_params)
        spec = replace(spec, hidden_units=cfg.hidden_units)
        log.info("search: best %s (val loss %.4f)", found.best_params, found.best_value)
    return trainer(train_xy, val_xy, spec, cfg, None), search


def _body(args: argparse.Namespace, params: Params) -> None:
    prepared = args.prepared or params.paths.prepared
    out = args.out or params.paths.model
    reports = (args.reports or params.paths.reports) / "train"
    cfg = params.train
    data_version = json.loads((prepared / "data_card.json").read_text())["dvc_raw_md5"]
    ledger = PrivacyLedger(params.paths.privacy_ledger)
    planned = planned_epsilon(cfg)
    if planned > 0:
        ledger.check(data_version, planned, cfg.privacy.max_total_epsilon)
    result, search = train(params, prepared)
    if result.spec.backend == "keras":
        from components.training.keras_train import save_keras  # TensorFlow

        save_keras(result.model, out)
    else:
        save_model(result.model, result.spec, out)
    if result.privacy is not None:
        ledger.record(data_version, result.privacy, cfg.mode)
    reports.mkdir(parents=True, exist_ok=True)
    record = {
        "mode": cfg.mode,
        "backend": result.spec.backend,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "privacy": asdict(result.privacy) if result.privacy else None,
        "privacy_total_epsilon": ledger.total(data_version) if result.privacy else None,
        "federated": result.details or None,
        "search": search or None,
        "hidden_units": result.spec.hidden_units,
    }
    (reports / TRAINING).write_text(json.dumps(record, indent=1) + "\n")
    log.info(
        "trained %s/%s (%s), best step %d",
        cfg.mode,
        result.spec.backend,
        result.spec.kind,
        result.best_epoch,
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("train", __doc__ or "")
    for name in ("prepared", "out", "reports"):
        parser.add_argument(f"--{name}", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
