"""params.yaml's training side: privacy, federated learning, the search, training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict


class PrivacyConfig(Strict):
    """DP-SGD through Opacus (torch backend only)."""

    enabled: bool = False
    # The privacy budget (epsilon) one training run may spend (Opacus).
    target_epsilon: float = Field(3.0, gt=0)
    # The delta of (epsilon, delta)-differential privacy.
    target_delta: float = Field(1e-5, gt=0, lt=1)
    # Per-sample gradients are clipped to this norm.
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
    # How rows are divided among clients: evenly (iid) or skewed by label (dirichlet).
    kind: Literal["iid", "dirichlet"] = "iid"
    # Dirichlet concentration: smaller is more skewed.
    alpha: float = Field(0.5, gt=0)


class StrategyConfig(Strict):
    # Flower's aggregation strategy.
    kind: Literal["fedavg", "fedprox"] = "fedavg"
    # FedProx's proximal term.
    mu: float = Field(0.01, ge=0)


class FederatedConfig(Strict):
    """Flower simulation: partitions of the training split act as clients."""

    # Train with Flower over simulated clients instead of centrally.
    enabled: bool = False
    # How many clients the training split is divided among.
    num_clients: int = Field(5, ge=2, le=1000)
    # Federated rounds.
    rounds: int = Field(10, ge=1, le=10_000)
    # Share of clients asked to train each round.
    fraction_fit: float = Field(1.0, gt=0, le=1)
    partition: PartitionConfig = PartitionConfig()
    strategy: StrategyConfig = StrategyConfig()
    # Epochs each client trains per round.
    local_epochs: int = Field(1, ge=1)
    dp: Literal["none", "client_opacus", "central_fixed_clipping"] = "none"
    # central_fixed_clipping: Gaussian noise on the clipped, aggregated updates.
    noise_multiplier: float = Field(1.0, gt=0)
    # Norm each client's update is clipped to.
    clipping_norm: float = Field(1.0, gt=0)


class FloatRange(Strict):
    # Lowest value tried.
    # Lowest value tried.
    low: float
    # Highest value tried.
    # Highest value tried.
    high: float
    # Sample on a log scale.
    # Sample on a log scale.
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
    # Range of learning rates to try.
    learning_rate: FloatRange | None = FloatRange(low=3e-4, high=1e-2, log=True)
    # Range of weight decays to try.
    weight_decay: FloatRange | None = FloatRange(low=1e-6, high=1e-3, log=True)
    # Hidden widths to try.
    hidden_units: list[int] | None = Field(default_factory=lambda: [32, 64, 128])
    # Batch sizes to try.
    batch_size: list[int] | None = None


class SearchConfig(Strict):
    """Optuna study over the central model; the best trial's params are used."""

    # Search hyperparameters (Optuna trials) before the final fit.
    enabled: bool = False
    # How many trials.
    n_trials: int = Field(10, ge=1, le=1000)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    trial_epochs: int | None = Field(15, ge=1)  # null: train.epochs
    # What the search may vary; null leaves a parameter as set.
    space: SearchSpace = SearchSpace()


class TrainConfig(Strict):
    backend: Literal["torch", "keras"] = "torch"
    # Seed of weights and batches (a run is reproducible).
    seed: int = 42
    # Passes over the training split.
    epochs: int = Field(40, ge=1, le=10_000)
    # Rows per optimizer step.
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    # The optimizer's step size.
    learning_rate: float = Field(0.002, gt=0, le=10)
    # L2 penalty on the weights.
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(6, ge=1)
    # Width of the hidden layer (dscnn: of every convolution).
    hidden_units: int = Field(64, ge=1)
    # auto: a small CNN for images, an MLP for tables; dscnn: MLPerf Tiny's
    # depthwise-separable CNN for keyword spotting (images such as 49 x 10 MFCCs).
    network: Literal["auto", "dscnn"] = "auto"
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
        if self.network == "dscnn" and (self.privacy.enabled or fed.dp != "none"):
            raise ValueError(
                "network: dscnn has batch normalization, which DP-SGD (Opacus) "
                "refuses; use network: auto for private training"
            )
        if fed.enabled and self.search.enabled:
            raise ValueError("search.enabled is for central training, not federated")
        return self
