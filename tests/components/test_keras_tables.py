"""The Keras backend takes the same `features:` section as PyTorch: imputation,
indicators, one-hot and date parts are layers inside the model
(components/training/keras_inputs.py), so its TFLite files take the table's raw
rows (a category by its index, a gap as NaN) as the ONNX files do. Before, a
params file with `train.backend: keras` and a `features:` section was refused
("built for train.backend torch only")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.config import TrainConfig
from components.data.features import encode, encoding_to_json, fit_encoding
from components.optimization import tflite
from components.optimization.runtime import LiteRtModel
from components.training.keras_inputs import date_parts
from components.training.keras_train import load_keras, save_keras, train_keras
from components.training.model import ModelSpec
from components.training.torch_train import Arrays
from tests.components.test_dates import PARTS
from tests.components.test_features import FEATURES, SPECIES, _params


def test_keras_with_a_features_section_is_params(penguins):
    params = _params()
    raw = params.model_dump(mode="json")
    raw["train"]["backend"] = "keras"
    raw["optimize"]["ship_variant"] = "int8_static"
    from components.config import parse_params

    assert parse_params(raw).train.backend == "keras"


def test_a_keras_model_and_its_tflite_files_take_raw_rows(penguins, tmp_path):
    encoding = fit_encoding(penguins, FEATURES, _params().features)
    spec = ModelSpec(
        len(FEATURES), SPECIES, FEATURES, 16, encoding=encoding_to_json(encoding)
    )
    shuffled = penguins.sample(frac=1.0, random_state=0).reset_index(drop=True)
    x = encode(shuffled, encoding)
    assert np.isnan(x).any()  # sex's and the measurements' gaps, as NaN
    y = shuffled.species.map(SPECIES.index).to_numpy(np.int64)
    train, val = Arrays(x[:260], y[:260]), Arrays(x[260:], y[260:])
    cfg = TrainConfig(epochs=40, batch_size=32, learning_rate=0.01, patience=8)
    result = train_keras(train, val, spec, cfg)
    keras_model = result.model
    expected = keras_model.model.predict(x, verbose=0)
    assert np.isfinite(expected).all()
    assert (expected[260:].argmax(1) == val.y).mean() > 0.9

    save_keras(keras_model, tmp_path / "model")  # the layer is saved with it
    again = load_keras(tmp_path / "model").model.predict(x, verbose=0)
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-5)

    fp32 = LiteRtModel(tflite.convert_fp32(keras_model.model, tmp_path / "f.tflite"))
    np.testing.assert_allclose(fp32.logits(x), expected, rtol=1e-4, atol=1e-4)
    int8_path = tflite.convert_int8(
        keras_model.model, tmp_path / "i.tflite", train.x[:100], raw_rows=True
    )
    int8 = LiteRtModel(int8_path)
    assert int8.inp["dtype"] == np.float32  # raw rows in: NaN is a gap
    tensors = int8.interpreter.get_tensor_details()
    assert any(t["dtype"] == np.int8 for t in tensors)  # the network: int8
    logits = int8.logits(x)
    assert np.isfinite(logits).all()
    agree = (logits.argmax(1) == expected.argmax(1)).mean()
    assert agree > 0.95, agree


def test_the_date_parts_in_tensorflow_are_pandas_calendar_parts():
    """The same range as the PyTorch parts' test (tests/components/test_dates.py):
    leap years, 1900 and 2100, times before the origin, in int32."""
    origin = int((pd.Timestamp("2023-06-15") - pd.Timestamp("1970-01-01")).days)
    minutes = np.arange(-(2**24), 2**24, 37 * 1440 + 37, dtype=np.int64)
    at = pd.Timestamp("2023-06-15") + pd.to_timedelta(minutes, unit="min")
    got = date_parts(tf.constant(minutes.astype(np.float32)), origin, PARTS).numpy()
    expected = np.stack([getattr(at, p) for p in PARTS], axis=1)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins().drop(columns="year")
