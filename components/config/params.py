"""The params model: every section of params.yaml, validated on load, and the
one-line error that names the key, the value and what is allowed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, model_validator

from components.config.base import Strict
from components.config.data import (
    SPEECH_SOURCE,
    DataConfig,
    PathsConfig,
    SplitConfig,
    ValidationConfig,
)
from components.config.features import FeaturesConfig
from components.config.release import (
    FleetConfig,
    MonitoringConfig,
    OptimizeConfig,
    RegistryConfig,
    ServingConfig,
)
from components.config.training import (
    TrainConfig,
)
from components.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


# The optimized variants each backend produces (components/optimization/optimize.py).
VARIANTS = {
    "torch": ("fp32", "int8_static", "int8_dynamic", "pruned", "pruned_int8_static"),
    "keras": ("fp32", "fp16", "int8_static"),  # TFLite full-integer, calibrated
}


class Params(Strict):
    # Where the pipeline's stages read and write, relative to the project.
    paths: PathsConfig = PathsConfig()
    # The data set: its source, label column and card.
    data: DataConfig
    # How the rows are split (a seeded hash of each row's features: stable as rows
    # are added).
    split: SplitConfig = SplitConfig()
    # The data contract (Great Expectations) every prepared row must meet.
    validation: ValidationConfig
    # How table columns become model inputs (encoded inside the exported model).
    features: FeaturesConfig = FeaturesConfig()
    # Training: the model, its optimizer, and differential privacy, federated
    # training or a search.
    train: TrainConfig = TrainConfig()
    # The device variants: pruning, int8, the budgets of each device profile.
    optimize: OptimizeConfig = OptimizeConfig()
    # The MLflow registry: the model's name, the gates, promotion.
    registry: RegistryConfig
    # The BentoML service.
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

    @model_validator(mode="after")
    def _source_is_versioned(self) -> Params:
        """A table source lives in `paths.sources`, a DVC dependency of prepare:
        outside it, an edited file would not be a new data version."""
        source = self.data.source
        if source.startswith("sklearn:") or source == SPEECH_SOURCE:
            return self  # made from packages and params, both versioned
        folder = Path(os.path.normpath(self.paths.sources))
        inside = Path(os.path.normpath(source)).parent
        if Path(source).is_absolute() or not (
            inside == folder or folder in inside.parents
        ):
            raise ValueError(
                f"data.source {source!r} is outside paths.sources ({str(folder)!r}), "
                "which DVC watches: move the file there and set data.source: "
                f"{(folder / Path(source).name).as_posix()}"
            )
        return self

    @model_validator(mode="after")
    def _features_fit_the_model(self) -> Params:
        label = self.data.label_column
        if label in self.features.columns or label in self.features.drop:
            raise ValueError(f"features: {label!r} is data.label_column, not a feature")
        if self.features.plain:
            return self
        if self.data.image_shape is not None:
            raise ValueError("features: column kinds are for tables, not images")
        return self

    def incoming_dir(self) -> Path:
        """Where newly labelled rows of this data set arrive: `paths.incoming/<data
        name>/`, a subfolder per deployment target (`serving/`, `cohort-<name>/`);
        another data set's rows are never read."""
        return self.paths.incoming / self.data.name

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
