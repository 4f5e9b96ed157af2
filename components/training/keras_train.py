"""The Keras backend: the same CNN/MLP as the PyTorch one, trained with Keras'
EarlyStopping, saved as a .keras file beside the shared model spec."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from components.config import TrainConfig
from components.metrics import classification_metrics
from components.training.keras_inputs import TableInputs
from components.training.model import (
    SPEC,
    ModelSpec,
    load_spec,
    standardization_stats,
)
from components.training.torch_train import (
    Arrays,
    EpochHook,
    TrainResult,
    check_finite,
)

KERAS_FILE = "model.keras"


def build_keras(spec: ModelSpec, train_x: np.ndarray, seed: int = 0) -> keras.Model:
    """Normalization adapted on the training split, then the CNN or the MLP.

    Every initializer and the dropout get their own seed from ``seed``: left
    unseeded, Keras draws them from Python's global ``random``, which any other
    thread in the process may advance (the flaky reproducibility test)."""
    seeds = iter(range(seed, seed + 16))

    def he() -> keras.initializers.Initializer:
        return keras.initializers.HeNormal(seed=next(seeds))

    inputs = keras.Input(shape=(spec.n_features,), name="features")
    x = inputs
    if spec.encoding:  # a table's raw rows: its `features:` section inside
        table = TableInputs(spec.encoding, name="table_inputs")
        x = table(inputs)
        train_x = table(np.asarray(train_x, np.float32)).numpy()
    mean, std = standardization_stats(train_x)
    x = layers.Normalization(mean=mean, variance=std**2, name="standardize")(x)
    if spec.network == "dscnn":
        x = _dscnn(x, spec, he, seeds)
    elif spec.image_shape:
        h, w = spec.image_shape
        x = layers.Reshape((h, w, 1))(x)
        for filters in (16, 32):
            x = layers.Conv2D(
                filters, 3, padding="same", activation="relu", kernel_initializer=he()
            )(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(spec.hidden_units, activation="relu", kernel_initializer=he())(
            x
        )
        x = layers.Dropout(0.2, seed=next(seeds))(x)
    else:
        for _ in range(2):
            x = layers.Dense(
                spec.hidden_units, activation="relu", kernel_initializer=he()
            )(x)
    logits = keras.initializers.GlorotUniform(seed=next(seeds))
    outputs = layers.Dense(len(spec.classes), kernel_initializer=logits, name="logits")(
        x
    )
    return keras.Model(inputs, outputs)


def _dscnn(x: Any, spec: ModelSpec, he: Callable[[], Any], seeds: Iterator[int]) -> Any:
    """MLPerf Tiny's DS-CNN (its keras_model.py), as the torch one
    (components/training/model.py: dscnn_body)."""
    if not spec.image_shape:
        raise ValueError("train.network dscnn needs data.image_shape (e.g. [49, 10])")
    h, w = spec.image_shape
    c = spec.hidden_units
    x = layers.Reshape((h, w, 1))(x)
    x = layers.Conv2D(c, (10, 4), strides=2, padding="same", kernel_initializer=he())(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(0.2, seed=next(seeds))(x)
    for _ in range(4):
        x = layers.DepthwiseConv2D(3, padding="same", depthwise_initializer=he())(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(c, 1, kernel_initializer=he())(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.Dropout(0.4, seed=next(seeds))(x)
    x = layers.AveragePooling2D(pool_size=(-(-h // 2), -(-w // 2)))(x)
    return layers.Flatten()(x)


def _batches(data: Arrays, batch_size: int, seed: int) -> tf.data.Dataset:
    """The training rows reshuffled each epoch by a seeded op, not by Keras'
    unseeded shuffle (whose seed comes from the process-wide op counter)."""
    rows = tf.data.Dataset.from_tensor_slices((data.x, data.y))
    rows = rows.shuffle(len(data.y), seed=seed, reshuffle_each_iteration=True)
    return rows.batch(batch_size)


def _optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    kinds = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
    }
    return kinds[cfg.optimizer](
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay or None
    )


class _EpochMetrics(keras.callbacks.Callback):
    """The same per-epoch metrics as the PyTorch backend (macro-F1 included)."""

    def __init__(self, val: Arrays, on_epoch: EpochHook | None) -> None:
        super().__init__()
        self.val, self.on_epoch = val, on_epoch
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        check_finite(float(logs.get("loss", np.nan)), f"epoch {epoch + 1}")
        logits = self.model.predict(self.val.x, verbose=0)
        scores = classification_metrics(self.val.y, logits.argmax(axis=1))
        row = {
            "epoch": epoch + 1,
            "train_loss": float(logs["loss"]),
            "val_loss": float(logs["val_loss"]),
        }
        self.rows.append(row | {f"val_{k}": v for k, v in scores.items()})
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, float(logs["val_loss"]))


def train_keras(
    train: Arrays,
    val: Arrays,
    spec: ModelSpec,
    cfg: TrainConfig,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    spec = replace(spec, backend="keras")
    model = build_keras(spec, train.x, cfg.seed)
    model.compile(
        optimizer=_optimizer(cfg),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    metrics = _EpochMetrics(val, on_epoch)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=cfg.patience, restore_best_weights=True
    )
    model.fit(
        _batches(train, cfg.batch_size, cfg.seed),
        validation_data=(val.x, val.y),
        validation_batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        shuffle=False,  # _batches reshuffles each epoch
        verbose=0,
        callbacks=[metrics, stop],
    )
    # EarlyStopping has restored the best epoch's weights at the end of fit.
    best = stop.best_epoch + 1
    return TrainResult(KerasClassifier(model, spec), spec, metrics.rows, best)


@dataclass(frozen=True)
class KerasClassifier:
    model: keras.Model
    spec: ModelSpec

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = self.model.predict(np.asarray(x, dtype=np.float32), verbose=0)
        return tf.nn.softmax(logits).numpy()


def save_keras(classifier: KerasClassifier, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    classifier.model.save(folder / KERAS_FILE)
    (folder / SPEC).write_text(json.dumps(asdict(classifier.spec), indent=2) + "\n")


def load_keras(folder: Path) -> KerasClassifier:
    return KerasClassifier(
        keras.saving.load_model(folder / KERAS_FILE), load_spec(folder)
    )
