"""Hyperparameter search with Optuna: each trial a central training run whose
validation loss Optuna samples against and prunes on."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import optuna

from components.config import SearchConfig, TrainConfig
from components.training.model import ModelSpec
from components.training.torch_train import Arrays, Trainer


@dataclass(frozen=True)
class SearchResult:
    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]


def _sampler(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, cfg: SearchConfig) -> dict[str, Any]:
    space, chosen = cfg.space, {}
    for name in ("learning_rate", "weight_decay"):
        rng = getattr(space, name)
        if rng is not None:
            chosen[name] = trial.suggest_float(name, rng.low, rng.high, log=rng.log)
    for name in ("hidden_units", "batch_size"):
        choices = getattr(space, name)
        if choices:
            chosen[name] = trial.suggest_categorical(name, choices)
    return chosen


def run_search(
    train: Arrays,
    val: Arrays,
    spec: ModelSpec,
    cfg: TrainConfig,
    trainer: Trainer,
) -> SearchResult:
    """Minimize validation loss; pruned trials are kept and marked PRUNED."""
    search = cfg.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=_sampler(search, cfg.seed), pruner=_pruner(search)
    )

    def objective(trial: optuna.Trial) -> float:
        chosen = suggest(trial, search)
        trial_cfg = cfg.model_copy(
            update=chosen
            | {
                "epochs": search.trial_epochs or cfg.epochs,
                "search": search.model_copy(update={"enabled": False}),
            }
        )
        trial_spec = replace(spec, hidden_units=trial_cfg.hidden_units)

        def report(epoch: int, val_loss: float) -> None:
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        result = trainer(train, val, trial_spec, trial_cfg, report)
        best = result.history[result.best_epoch - 1]
        trial.set_user_attr("val_accuracy", best["val_accuracy"])
        return float(best["val_loss"])

    study.optimize(objective, n_trials=search.n_trials)
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "val_accuracy": t.user_attrs.get("val_accuracy"),
            "last_step": t.last_step,
        }
        for t in study.trials
    ]
    return SearchResult(study.best_params, float(study.best_value), trials)
