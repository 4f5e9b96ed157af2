"""The params model: every tunable in params.yaml, validated on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class Strict(BaseModel):
    """Unknown keys are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(Strict):
    raw: Path = Path("data/raw")
    prepared: Path = Path("data/prepared")
    quarantine: Path = Path("data/quarantine")
    model: Path = Path("models/model")
    variants: Path = Path("models/variants")
    reports: Path = Path("reports")
    # Not a DVC output: it must outlive every rerun of the train stage.
    privacy_ledger: Path = Path("data/privacy_ledger.json")
    prediction_log: Path = Path("data/predictions")
    # Newly labelled rows (.csv/.parquet, the source's columns): the next training
    # run adds them to the source, through the same validation, as a new data version.
    incoming: Path = Path("data/incoming")


class DataConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = Field(
        description="sklearn:<digits|wine|breast_cancer|iris> or a .csv/.parquet path"
    )
    label_column: str = "label"
    image_shape: tuple[int, int] | None = None
    description: str = ""
    license: str = ""
    known_limitations: str = ""

    @model_validator(mode="after")
    def _source_kind(self) -> DataConfig:
        src = self.source
        if src.startswith("sklearn:"):
            if src.split(":", 1)[1] not in SKLEARN_DATASETS:
                raise ValueError(
                    f"unknown scikit-learn data set {src!r}; allowed: "
                    + ", ".join(f"sklearn:{n}" for n in SKLEARN_DATASETS)
                )
        elif Path(src).suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(
                f"source {src!r} must be sklearn:<name> or a .csv/.parquet file"
            )
        return self


SKLEARN_DATASETS = ("digits", "wine", "breast_cancer", "iris")


class SplitConfig(Strict):
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitConfig:
        if self.val + self.test >= 0.9:
            raise ValueError(
                f"val + test = {self.val + self.test:.2f} leaves too little to train "
                "on; expected val + test < 0.9"
            )
        return self


class ValidationConfig(Strict):
    labels: list[int | str] = Field(min_length=2)
    # The expected feature columns; null means "the columns of data.source".
    feature_columns: list[str] | None = None
    feature_range: tuple[float, float] | None = None
    column_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # KL divergence of the label distribution from uniform (0 = perfectly balanced).
    max_class_kl_divergence: float = Field(0.05, gt=0)
    max_duplicate_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    min_rows: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> ValidationConfig:
        ranges = dict(self.column_ranges)
        if self.feature_range is not None:
            ranges["feature_range"] = self.feature_range
        for name, (low, high) in ranges.items():
            if low > high:
                raise ValueError(
                    f"range for {name!r} is [{low}, {high}]; need min<=max"
                )
        return self


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


class DeviceProfile(Strict):
    """A class of device and its budgets; null means no limit of that kind."""

    max_model_kb: float | None = Field(None, gt=0)  # flash / storage for the file
    max_ram_kb: float | None = Field(None, gt=0)  # weights + peak activations
    # Address-space limit of the infra-validation process that loads the file in
    # its device runtime and answers queries; null: no limit.
    runtime_memory_mb: int | None = Field(None, ge=64)


class OptimizeConfig(Strict):
    prune_amount: float = Field(0.5, ge=0, lt=1)
    finetune_epochs: int = Field(5, ge=0)
    calibration_samples: int = Field(200, ge=1)
    max_accuracy_drop: float = Field(0.01, ge=0, le=1)
    latency_runs: int = Field(300, ge=10)
    infra_samples: int = Field(8, ge=1)
    # The variant that ships to devices: the gate judges this file in its runtime.
    ship_variant: str = "int8_static"
    profiles: dict[str, DeviceProfile] = Field(
        default_factory=lambda: {
            "mcu": DeviceProfile(
                max_model_kb=1024, max_ram_kb=320, runtime_memory_mb=256
            ),
            "gateway": DeviceProfile(max_ram_kb=524288, runtime_memory_mb=512),
            "cloud": DeviceProfile(),
        },
        min_length=1,
    )


class GatesConfig(Strict):
    """What a new version must meet to become `challenger`."""

    min_test_accuracy: float = Field(0.95, ge=0, le=1)
    max_drop_vs_champion: float = Field(0.01, ge=0, le=1)
    max_ship_kb: float | None = Field(256, gt=0)
    max_ship_latency_ms: float | None = Field(1.0, gt=0)
    require_ship_accepted: bool = True


class ServingConfig(Strict):
    alias: str = "champion"
    # fp32: the full-precision device file (ONNX or TFLite); ship: optimize.ship_variant
    variant: Literal["fp32", "ship"] = "fp32"
    max_request_rows: int = Field(256, ge=1)
    poll_s: float = Field(2.0, gt=0)  # how often the alias is checked for a new version
    log_sample_rate: float = Field(0.1, ge=0, le=1)
    log_rows_per_file: int = Field(1000, ge=1)


class RegistryConfig(Strict):
    model_name: str = Field(min_length=1)
    gates: GatesConfig = GatesConfig()
    # auto: a challenger that is at least as accurate as the champion is promoted;
    # manual: a person promotes (MLflow UI or `edgeloop promote`).
    promotion: Literal["auto", "manual"] = "auto"


class RolloutChecks(Strict):
    """How a rollout stage is judged, on the model as devices run it, against the
    previous version on the same devices."""

    min_install_success: float = Field(0.95, ge=0, le=1)
    max_error_rate: float = Field(0.05, ge=0, le=1)  # inference errors / inferences
    max_latency_ratio: float = Field(2.0, gt=0)  # median latency, new / previous
    max_confidence_drop: float = Field(0.10, ge=0, le=1)  # mean top-1 confidence
    max_class_shift: float = Field(0.25, ge=0, le=1)  # total variation distance
    # Fleet-wide stop: devices failed on this rollout, percent of the whole fleet.
    abort_failed_percent: float = Field(20.0, gt=0, le=100)


class FleetConfig(Strict):
    canary_percent: float = Field(10.0, gt=0, le=100)
    canary_cohort: str | None = None  # a named cohort instead of a percent
    waves: list[float] = Field(default_factory=lambda: [50.0])  # then 100 (full)
    bake_s: float = Field(5.0, ge=0)  # minimum time a stage runs before judging
    stage_timeout_s: float = Field(120.0, gt=0)  # judge with what has reported then
    min_reported: float = Field(0.9, gt=0, le=1)  # share of a stage that must report
    checks: RolloutChecks = RolloutChecks()
    poll_s: float = Field(2.0, gt=0)  # device check-in interval
    # A device not seen for this long is offline: not counted in a stage's health.
    offline_after_s: float = Field(60.0, gt=0)
    poll_jitter: float = Field(0.5, ge=0, le=1)  # +- share of poll_s
    max_backoff_s: float = Field(60.0, gt=0)
    telemetry_batch: int = Field(64, ge=1)  # inferences summarised per report
    max_telemetry_bytes: int = Field(65536, ge=1024)
    timestamp_expiry_s: int = Field(86400, ge=60)  # TUF timestamp lifetime
    metadata_expiry_days: int = Field(30, ge=1)  # snapshot / targets lifetime
    # Simulator: cohorts, the profile mix, and cohorts that share raw input samples.
    cohorts: list[str] = Field(
        default_factory=lambda: ["north", "south", "east"], min_length=1
    )
    profile_mix: dict[str, float] = Field(
        default_factory=lambda: {"mcu": 0.5, "gateway": 0.3, "cloud": 0.2}
    )
    sample_cohorts: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _waves_rise(self) -> FleetConfig:
        stages = [self.canary_percent, *self.waves]
        if any(b <= a for a, b in zip(stages, stages[1:], strict=False)) or any(
            w >= 100 for w in self.waves
        ):
            raise ValueError(
                f"fleet.waves {self.waves}: expected rising percents above "
                f"canary_percent {self.canary_percent} and below 100 (full comes last)"
            )
        return self


class MonitoringConfig(Strict):
    """Drift checks: windows, Evidently methods and thresholds, and the trigger.

    Wasserstein distance (normed by the reference's spread) is an effect size, not a
    p-value, so its verdict does not flip as windows grow (K-S and chi-square do)."""

    serving_window_rows: int = Field(500, ge=10)  # last N logged predictions
    device_window_reports: int = Field(100, ge=10)  # last N telemetry reports/cohort
    # Smaller windows get no verdict. Serving: at 100 rows the normed Wasserstein
    # distance of a window from the reference's own distribution passes 0.1 on too
    # many columns (bench/drift_false_alarms.py: 100% false alarms at 100 rows, 0% at
    # 500); devices: 0% at 50 reports.
    serving_min_rows: int = Field(300, ge=5)
    device_min_reports: int = Field(30, ge=5)
    reference_batches: int = Field(300, ge=30)  # batch-mean rows drawn for devices
    # A target's own labelled rows in the champion's data (paths.incoming/<target>/)
    # become its reference from this many on (monitoring/reference.py).
    target_reference_min_rows: int = Field(200, ge=10)
    delayed_labels_min_rows: int = Field(50, ge=5)  # accuracy on newer labels
    num_method: str = "wasserstein"
    num_threshold: float = Field(0.1, gt=0)  # per column
    drift_share: float = Field(0.3, gt=0, le=1)  # drifted columns share: window drifts
    consecutive: int = Field(2, ge=1)  # windows in a row before a trigger (hysteresis)
    cooldown_s: float = Field(600.0, ge=0)  # after a trigger, per target
    schedule_cron: str = "0 * * * *"  # the monitor deployment's schedule
    retrain_cron: str = "0 3 * * 0"  # training_pipeline's schedule (weekly)


# The optimized variants each backend produces (see components/optimize.py).
VARIANTS = {
    "torch": ("fp32", "int8_static", "int8_dynamic", "pruned", "pruned_int8_static"),
    "keras": ("fp32", "fp16", "int8_static"),  # TFLite full-integer, calibrated
}


class Params(Strict):
    paths: PathsConfig = PathsConfig()
    data: DataConfig
    split: SplitConfig = SplitConfig()
    validation: ValidationConfig
    train: TrainConfig = TrainConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    registry: RegistryConfig
    serving: ServingConfig = ServingConfig()
    fleet: FleetConfig = FleetConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @model_validator(mode="after")
    def _ship_variant_exists(self) -> Params:
        allowed = VARIANTS[self.train.backend]
        if self.optimize.ship_variant not in allowed:
            raise ValueError(
                f"optimize.ship_variant {self.optimize.ship_variant!r} is not made by "
                f"the {self.train.backend} backend; allowed: {', '.join(allowed)}"
            )
        return self

    def digest(self) -> str:
        """A stable hash of every tunable, for lineage tags."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; a wrong key, type or value raises ConfigError."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found", hint="run from the project root"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {raw!r}")
    return parse_params(raw, source=str(path))


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"{source}: {_describe(first)}",
            hint=f"{len(exc.errors())} problem(s) in all; fix {source} and rerun",
        ) from None


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see params.yaml"
        return f"{key}: unknown key; allowed keys here: {allowed}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if not error["loc"]:  # a check across sections: the message names the keys
        return error["msg"].removeprefix("Value error, ")
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
