"""The fitted `features:` section inside a Keras model, as `TableInputs` does it
in PyTorch (components/training/model.py): gaps filled with the training split's
value, "was missing" indicators, categories (their index) one-hot, dates (minutes
since their origin) taken apart into the calendar parts named. In TensorFlow ops
the TFLite converter keeps as builtins (a gap is `x != x`: NOT_EQUAL, not an
IsNan op; SELECT_V2, GATHER, EQUAL, FLOOR_DIV on int32), so a .tflite file takes
the raw rows the ONNX files take."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from components.data.features import encoding_from_json
from components.training import calendar

TENSORFLOW = calendar.Ops(
    div=tf.math.floordiv,
    mod=tf.math.floormod,
    where=tf.where,
    flag=lambda condition, like: tf.cast(condition, like.dtype),
)


def date_parts(minutes: tf.Tensor, origin: int, names: list[str]) -> tf.Tensor:
    """The named parts (float32 columns) of float minutes since `origin`'s
    midnight (int32 inside: 31 years of minutes fit)."""
    values = calendar.part_values(
        tf.cast(tf.round(minutes), tf.int32), origin, TENSORFLOW
    )
    return tf.cast(tf.stack([values[n] for n in names], axis=1), tf.float32)


@keras.saving.register_keras_serializable(package="edgeloop")
class TableInputs(keras.layers.Layer):
    """Raw rows (a category by its index, a gap as NaN, a date in minutes since
    its origin) to the network's inputs, from the fitted encoding (its JSON)."""

    def __init__(self, encoding: list[dict], **kwargs) -> None:
        super().__init__(**kwargs)
        self.encoding = encoding
        columns = encoding_from_json(encoding)
        self.fill = np.array(
            [0.0 if np.isnan(c.fill) else c.fill for c in columns], np.float32
        )
        self.plain = [
            i for i, c in enumerate(columns) if c.categories is None and c.parts is None
        ]
        self.categorical = [
            (i, len(c.categories)) for i, c in enumerate(columns) if c.categories
        ]
        self.dates = [
            (i, c.origin or 0, list(c.parts)) for i, c in enumerate(columns) if c.parts
        ]
        self.indicators = [i for i, c in enumerate(columns) if c.indicator]
        self.width = sum(c.width for c in columns)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        gap = tf.not_equal(x, x)  # NaN is the one value unequal to itself
        filled = tf.where(gap, tf.constant(self.fill)[None, :], x)
        parts = [tf.gather(filled, self.plain, axis=1)] if self.plain else []
        for i, k in self.categorical:
            codes = tf.range(k, dtype=tf.float32)[None, :]
            parts.append(tf.cast(tf.equal(filled[:, i : i + 1], codes), tf.float32))
        for i, origin, names in self.dates:
            parts.append(date_parts(filled[:, i], origin, names))
        if self.indicators:
            parts.append(tf.cast(tf.gather(gap, self.indicators, axis=1), tf.float32))
        return tf.concat(parts, axis=1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.width)

    def get_config(self) -> dict:
        return super().get_config() | {"encoding": self.encoding}
