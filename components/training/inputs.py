"""From the prepared frames to what a model takes: its spec (features in order,
classes, shape, backend) and its arrays (features as float32, labels as indices
into the spec's classes); with a `features:` section, the raw columns encoded as
the exported model takes them (components/data/features.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.config import Params
from components.data.features import (
    encoding_from_json,
    encoding_to_json,
    fit_encoding,
    model_input,
)
from components.data.sources import feature_columns
from components.errors import TrainingError
from components.training.model import ModelSpec
from components.training.torch_train import Arrays


def to_arrays(frame: pd.DataFrame, spec: ModelSpec, label: str) -> Arrays:
    """Features in the spec's column order; labels as indices into spec.classes."""
    index = {c: i for i, c in enumerate(spec.classes)}
    y = frame[label].map(index)
    if y.isna().any():
        unknown = sorted(set(frame[label][y.isna()]))
        raise TrainingError(f"labels {unknown} are not in validation.labels")
    encoding = encoding_from_json(spec.encoding)
    x = model_input(frame, spec.feature_columns, encoding)
    return Arrays(x=x, y=y.to_numpy(dtype=np.int64))


def spec_for(params: Params, train_frame: pd.DataFrame) -> ModelSpec:
    features = feature_columns(train_frame, params.data.label_column)
    encoding = None
    if not params.features.plain:
        fitted = fit_encoding(train_frame, features, params.features)
        encoding = encoding_to_json(fitted)
    return ModelSpec(
        n_features=len(features),
        classes=list(params.validation.labels),
        feature_columns=features,
        hidden_units=params.train.hidden_units,
        image_shape=params.data.image_shape,
        backend=params.train.backend,
        encoding=encoding,
        network=params.train.network,
    )
