"""params.yaml's training side: privacy, federated learning, the search, training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict


class PrivacyConfig(Strict):
    """DP-SGD through Opacus (torch backend only)."""

    enabled: bool = False
    target_epsilon: float = Field(3.0, gt=0)
    target_delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    # The privacy ledger refuses a run that would push the epsilon spent on one data
    # version past this total.
    max_total_epsilon: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _budget_fits(self) -> PrivacyConfig:
        if self.enabled and self.target_epsilon > self.max_total_epsilon:
            raise ValueError(
                f"target_epsilon {self.target_epsilon} exceeds max_total_epsilon "
                f"{self.max_total_epsilon}; one run cannot spend more than the total"
            )
        return self


class PartitionConfig(Strict):
    kind: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(0.5, gt=0)


class StrategyConfig(Strict):
    kind: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float = Field(0.01, ge=0)


class FederatedConfig(Strict):
    """Flower simulation: partitions of the training split act as clients."""

    enabled: bool = False
    num_clients: int = Field(5, ge=2, le=1000)
    rounds: int = Field(10, ge=1, le=10_000)
    fraction_fit: float = Field(1.0, gt=0, le=1)
    partition: PartitionConfig = PartitionConfig()
    strategy: StrategyConfig = StrategyConfig()
    local_epochs: int = Field(1, ge=1)
    dp: Literal["none", "client_opacus", "central_fixed_clipping"] = "none"
    # central_fixed_clipping: Gaussian noise on the clipped, aggregated updates.
    noise_multiplier: float = Field(1.0, gt=0)
    clipping_norm: float = Field(1.0, gt=0)


class FloatRange(Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low >= self.high or (self.log and self.low <= 0):
            raise ValueError(
                f"need 0 < low < high for a log range and low < high otherwise, "
                f"got low={self.low}, high={self.high}"
            )
        return self


class SearchSpace(Strict):
    learning_rate: FloatRange | None = FloatRange(low=3e-4, high=1e-2, log=True)
    weight_decay: FloatRange | None = FloatRange(low=1e-6, high=1e-3, log=True)
    hidden_units: list[int] | None = Field(default_factory=lambda: [32, 64, 128])
    batch_size: list[int] | None = None


class SearchConfig(Strict):
    """Optuna study over the central model; the best trial's params are used."""

    enabled: bool = False
    n_trials: int = Field(10, ge=1, le=1000)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    trial_epochs: int | None = Field(15, ge=1)  # null: train.epochs
    space: SearchSpace = SearchSpace()


class TrainConfig(Strict):
    backend: Literal["torch", "keras"] = "torch"
    seed: int = 42
    epochs: int = Field(40, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = Field(0.002, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(6, ge=1)
    hidden_units: int = Field(64, ge=1)
    privacy: PrivacyConfig = PrivacyConfig()
    federated: FederatedConfig = FederatedConfig()
    search: SearchConfig = SearchConfig()

    @property
    def mode(self) -> str:
        """central | private | federated | federated_private"""
        fed = self.federated
        if fed.enabled:
            return "federated" if fed.dp == "none" else "federated_private"
        return "private" if self.privacy.enabled else "central"

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        fed = self.federated
        if self.backend == "keras" and self.privacy.enabled:
            raise ValueError(
                "privacy.enabled needs backend: torch (DP-SGD runs through Opacus, "
                "which trains PyTorch models); Keras would train without privacy"
            )
        if self.backend == "keras" and fed.enabled:
            raise ValueError("federated.enabled needs backend: torch")
        if fed.enabled and self.privacy.enabled:
            raise ValueError(
                "privacy.enabled is for central training; for federated DP set "
                "federated.dp: client_opacus or central_fixed_clipping"
            )
        if fed.enabled and self.search.enabled:
            raise ValueError("search.enabled is for central training, not federated")
        return self
