"""The params model: every tunable in params.yaml, validated on load (`load_params`),
one module per side of the loop: `data.py` (paths, source, split, data contract),
`training.py` (privacy, federated, search, training), `release.py` (optimization
profiles, gates, registry, serving, fleet, monitoring), `params.py` (the whole file,
its loading and its one-line errors)."""

from components.config.base import (
    Strict,
)
from components.config.data import (
    SKLEARN_DATASETS,
    AudioContract,
    DataConfig,
    PathsConfig,
    SpeechConfig,
    SplitConfig,
    ValidationConfig,
)
from components.config.features import (
    FeaturesConfig,
    FeatureSpec,
)
from components.config.params import (
    DEFAULT_PARAMS,
    VARIANTS,
    Params,
    load_params,
    parse_params,
)
from components.config.release import (
    DeviceProfile,
    FleetConfig,
    GatesConfig,
    MonitoringConfig,
    OptimizeConfig,
    RegistryConfig,
    RolloutChecks,
    ServingConfig,
)
from components.config.training import (
    FederatedConfig,
    FloatRange,
    PartitionConfig,
    PrivacyConfig,
    SearchConfig,
    SearchSpace,
    StrategyConfig,
    TrainConfig,
)

__all__ = [
    "DEFAULT_PARAMS",
    "AudioContract",
    "DataConfig",
    "SpeechConfig",
    "DeviceProfile",
    "FeatureSpec",
    "FeaturesConfig",
    "FederatedConfig",
    "FleetConfig",
    "FloatRange",
    "GatesConfig",
    "MonitoringConfig",
    "OptimizeConfig",
    "Params",
    "PartitionConfig",
    "PathsConfig",
    "PrivacyConfig",
    "RegistryConfig",
    "RolloutChecks",
    "SKLEARN_DATASETS",
    "SearchConfig",
    "SearchSpace",
    "ServingConfig",
    "SplitConfig",
    "StrategyConfig",
    "Strict",
    "TrainConfig",
    "VARIANTS",
    "ValidationConfig",
    "load_params",
    "parse_params",
]
