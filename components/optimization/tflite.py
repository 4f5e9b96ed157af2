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


def convert_int8(
    model: keras.Model, out: Path, calibration: np.ndarray, raw_rows: bool = False
) -> Path:
    """Full-integer int8; with `raw_rows` (a table's model, its `features:`
    inside) the input stays float32, since a gap is NaN and a category an index,
    and the preprocessing ops run in float where int8 has no kernel for them
    (as the ONNX int8 files leave the date arithmetic in float)."""
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative() -> object:
        for row in np.asarray(calibration, np.float32):
            yield [row[None, :]]

    converter.representative_dataset = representative
    if not raw_rows:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        out.write_bytes(converter.convert())
        return out
    # Selective quantization (TensorFlow's QuantizationDebugger): the table's
    # preprocessing and its standardization keep float, since quantizing the raw
    # input to int8 made islands 0, 1 and 2 one value and NaN no gap (int8
    # agreed with the Keras model on 0.56 of penguins' rows); the network after
    # it is int8.
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=representative,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(PREPROCESSING_OPS)
        ),
    )
    out.write_bytes(debugger.get_nondebug_quantized_model())
    return out


# The TFLite ops of components/training/keras_inputs.py's TableInputs and of the
# standardization after it: quantized before standardizing, one int8 scale
# spanned body mass in grams and a one-hot 0/1, and the 0/1 was lost.
PREPROCESSING_OPS = (
    "SUB",
    "MUL",
    "DIV",
    "NOT_EQUAL",
    "EQUAL",
    "SELECT",
    "SELECT_V2",
    "GATHER",
    "STRIDED_SLICE",
    "CAST",
    "CONCATENATION",
    "FLOOR_DIV",
    "FLOOR_MOD",
    "ROUND",
    "LESS",
    "LESS_EQUAL",
    "PACK",
)
