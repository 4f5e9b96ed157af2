"""From the prepared frames to what a model takes: its spec (features in order,
classes, shape, backend) and its arrays (features as float32, labels as indices
into the spec's classes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.config import Params
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
    x = frame[spec.feature_columns].to_numpy(dtype=np.float32)
    return Arrays(x=x, y=y.to_numpy(dtype=np.int64))


def spec_for(params: Params, train_frame: pd.DataFrame) -> ModelSpec:
    features = feature_columns(train_frame, params.data.label_column)
    return ModelSpec(
        n_features=len(features),
        classes=list(params.validation.labels),
        feature_columns=features,
        hidden_units=params.train.hidden_units,
        image_shape=params.data.image_shape,
        backend=params.train.backend,
    )
