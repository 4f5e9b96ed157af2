"""Federated training: Flower Datasets' partitions (IID and Dirichlet non-IID), and
the ClientApp/ServerApp pair run by Flower's simulation engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.config import FederatedConfig, SplitConfig, TrainConfig
from components.errors import TrainingError
from components.training.federated.simulation import run_federated
from components.training.federated.task import label_histograms, partition_rows
from components.training.model import ModelSpec, TorchClassifier
from components.training.torch_train import Arrays
from tests.conftest import digits_subset


@pytest.fixture(scope="module")
def digits_parts(tmp_path_factory) -> tuple[Path, Arrays, Arrays, ModelSpec]:
    data = digits_subset(900, SplitConfig(val=0.15, test=0.2))
    path = tmp_path_factory.mktemp("fed") / "train.parquet"
    data.split.train.to_parquet(path, index=False)
    return path, data.train, data.test, data.spec


def test_iid_partitions_cover_every_row_once():
    y = np.repeat(np.arange(10), 30)
    parts = partition_rows(y, FederatedConfig(enabled=True, num_clients=4), seed=1)
    rows = np.concatenate(parts)
    assert sorted(rows.tolist()) == list(range(300))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_dirichlet_partitions_are_skewed_by_label():
    y = np.repeat(np.arange(10), 60)

    def skew(kind: str) -> float:
        cfg = FederatedConfig(
            enabled=True, num_clients=5, partition={"kind": kind, "alpha": 0.1}
        )
        hist = np.array(label_histograms(y, partition_rows(y, cfg, seed=3), 10))
        return float((hist.max(axis=1) / hist.sum(axis=1)).mean())

    assert skew("dirichlet") > 2 * skew("iid")


def test_more_clients_than_rows_is_refused():
    cfg = FederatedConfig(enabled=True, num_clients=50)
    with pytest.raises(TrainingError, match="num_clients=50 exceeds the 20 training"):
        partition_rows(np.repeat(np.arange(2), 10), cfg, seed=0)


def _fed_cfg(**federated) -> TrainConfig:
    return TrainConfig(
        batch_size=32,
        learning_rate=0.003,
        hidden_units=32,
        federated={"enabled": True, "num_clients": 3, "rounds": 2, **federated},
    )


@pytest.mark.slow
def test_fedavg_simulation_improves_the_global_model(digits_parts):
    path, train, test, spec = digits_parts
    result = run_federated(
        train,
        test,
        spec,
        _fed_cfg(local_epochs=2),
        train_path=path,
        label_column="label",
    )
    rounds = [row["round"] for row in result.history]
    assert rounds == [0, 1, 2]
    first, last = result.history[0], result.history[-1]
    assert last["test_accuracy"] > first["test_accuracy"] + 0.3
    assert "clients_train_loss" in last
    accuracy = (
        TorchClassifier(result.model, spec).predict_proba(test.x).argmax(1) == test.y
    ).mean()
    assert accuracy == pytest.approx(last["test_accuracy"])
    assert sum(result.details["partitions"]["sizes"]) == len(train)
    assert result.privacy is None


@pytest.mark.slow
def test_fedprox_with_central_dp_accounts_epsilon(digits_parts):
    path, train, test, spec = digits_parts
    cfg = _fed_cfg(
        strategy={"kind": "fedprox", "mu": 0.1},
        partition={"kind": "dirichlet", "alpha": 0.5},
        dp="central_fixed_clipping",
        noise_multiplier=0.5,
    )
    result = run_federated(
        train, test, spec, cfg, train_path=path, label_column="label"
    )
    assert result.privacy is not None
    assert result.privacy.mechanism == "flower_central_fixed_clipping"
    assert result.privacy.epsilon > 0 and result.privacy.steps == 2
    hist = result.details["partitions"]["label_histograms"]
    assert len(hist) == 3 and sum(map(sum, hist)) == len(train)
