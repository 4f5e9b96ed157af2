"""The Keras backend's device files: the TFLite converter's float32, float16 and
full-integer (int8 in and out, calibrated on a representative data set) models."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    # Keras 3: export a SavedModel serving a batch of one, convert that.
    folder = Path(tempfile.mkdtemp(prefix="edgeloop-savedmodel-"))
    export = keras.export.ExportArchive()
    export.track(model)
    export.add_endpoint(
        "serve",
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([1, model.input_shape[-1]], tf.float32)],
    )
    export.write_out(str(folder), verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(str(folder))


def convert_fp32(model: keras.Model, out: Path) -> Path:
    out.write_bytes(_converter(model).convert())
    return out


def convert_fp16(model: keras.Model, out: Path) -> Path:
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    out.write_bytes(converter.convert())
    return out


def convert_int8(model: keras.Model, out: Path, calibration: np.ndarray) -> Path:
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative() -> object:
        for row in np.asarray(calibration, np.float32):
            yield [row[None, :]]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    out.write_bytes(converter.convert())
    return out
