"""A `datetime` feature: declared with the calendar parts the model uses, checked
by the contract (values that are not dates are findings), sent to the model as
minutes since the column's origin, and taken apart into its parts inside the
exported file, which answers as the torch model does; dates are left out of drift
(a timestamp moves on by itself). The table: hourly bike rentals over two years,
busy at weekday rush hours and weekend middays, which only the parts can tell."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from components.config import FeaturesConfig, TrainConfig
from components.data.contract import validate_batch
from components.data.dates import minutes_since, origin_day
from components.data.features import encode, encoding_to_json, fit_encoding
from components.errors import ConfigError
from components.optimization.compress import export_onnx, quantize_int8_static
from components.optimization.runtime import OnnxRuntimeModel
from components.training import dateparts
from components.training.model import ModelSpec, network_inputs
from components.training.torch_train import Arrays, train_torch
from monitoring import drift
from tests.conftest import default_params_dict
from tests.cpus import logits_without_vnni

PARTS = ["year", "month", "day", "dayofweek", "dayofyear", "hour", "minute"]
FEATURES = ["started", "temperature"]
DATED = {
    "columns": {
        "started": {
            "kind": "datetime",
            "parts": ["dayofweek", "hour"],
            "missing": "median",
            "indicator": True,
        }
    }
}


def rentals(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Hourly rentals from 2023-01-01 on: `busy` at weekday 7-9h and 16-18h, and
    weekend 11-15h; temperature is noise the model must not lean on. Timestamps
    written as a user's CSV would have them, some with a UTC offset."""
    rng = np.random.default_rng(seed)
    at = pd.Timestamp("2023-01-01") + pd.to_timedelta(
        rng.integers(0, 2 * 365 * 24 * 60, n), unit="min"
    )
    weekday = at.dayofweek < 5
    hour = at.hour
    rush = weekday & (((hour >= 7) & (hour <= 9)) | ((hour >= 16) & (hour <= 18)))
    leisure = ~weekday & (hour >= 11) & (hour <= 15)
    text = at.strftime("%Y-%m-%d %H:%M").to_series(index=range(n))
    text[::7] = at[::7].strftime("%Y-%m-%dT%H:%M:00+00:00")
    return pd.DataFrame(
        {
            "started": text,
            "temperature": rng.normal(12, 8, n).round(1),
            "busy": np.where(rush | leisure, "busy", "quiet"),
        }
    )


def test_the_parts_inside_the_model_are_pandas_calendar_parts():
    """Every 37th minute over four centuries either side of an origin (leap years,
    1900 and 2100 not leap, 2000 leap, times before the origin)."""
    origin = int((pd.Timestamp("2023-06-15") - pd.Timestamp("1970-01-01")).days)
    minutes = np.arange(-(2**24), 2**24, 37 * 1440 + 37, dtype=np.int64)
    at = pd.Timestamp("2023-06-15") + pd.to_timedelta(minutes, unit="min")
    got = dateparts.parts(
        torch.from_numpy(minutes.astype(np.float32)), origin, PARTS
    ).numpy()
    expected = np.stack(
        [getattr(at, p) for p in PARTS], axis=1
    )  # pandas: dayofweek 0 = Monday
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    centuries = pd.date_range("1601-01-01", "2399-12-31", freq="13D", unit="s")
    epoch = pd.Timestamp("1970-01-01").as_unit("s")
    days = torch.from_numpy((centuries - epoch).days.to_numpy())
    year, month, day = dateparts.civil(days.to(torch.int64))
    assert year.tolist() == list(centuries.year)
    assert month.tolist() == list(centuries.month)
    assert day.tolist() == list(centuries.day)


class _Parts(torch.nn.Module):
    def __init__(self, origin: int) -> None:
        super().__init__()
        self.origin = origin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dateparts.parts(x[:, 0], self.origin, PARTS)


def test_the_exported_file_computes_the_same_parts(tmp_path):
    """The integer arithmetic as ONNX Runtime runs it (the exporter turns int64
    floor division into Cast/Div/Floor), over the whole exact range."""
    origin = 19523  # 2023-06-15
    minutes = np.arange(-(2**24), 2**24, 1009 * 61, dtype=np.float32)[:, None]
    path = export_onnx(_Parts(origin), 1, tmp_path / "parts.onnx")
    with torch.no_grad():
        expected = _Parts(origin)(torch.from_numpy(minutes)).numpy()
    np.testing.assert_array_equal(OnnxRuntimeModel(path).logits(minutes), expected)


def test_dates_are_minutes_since_the_origin_gaps_and_non_dates_nan():
    values = pd.Series(
        [
            "2024-03-01 10:30",
            "2024-03-01T12:30:00+02:00",
            None,
            "soon",
            17,
            "2024-02-29",
        ]
    )
    origin = origin_day(values)
    assert pd.Timestamp("1970-01-01") + pd.Timedelta(days=origin) == pd.Timestamp(
        "2024-02-29"
    )
    got = minutes_since(values, origin)
    # 10:30 on the next day; 12:30 at +02:00 is 10:30 UTC too
    assert got[:2].tolist() == [1440 + 630, 1440 + 630]
    assert np.isnan(got[2:5]).all() and got[5] == 0


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return rentals()


def test_a_model_on_dates_learns_from_their_parts_and_its_file_agrees(table, tmp_path):
    cfg = FeaturesConfig.model_validate(DATED)
    train, val, test = table.iloc[:2000], table.iloc[2000:2500], table.iloc[2500:]
    gaps = train["started"].where(train.index % 50 != 0)  # 2% gaps
    train = train.assign(started=gaps)
    encoding = fit_encoding(train, FEATURES, cfg)
    spec = ModelSpec(
        2, ["busy", "quiet"], FEATURES, 32, encoding=encoding_to_json(encoding)
    )
    assert network_inputs(spec) == 2 + 1 + 1  # dayofweek, hour, the gap, temperature

    def arrays(frame: pd.DataFrame) -> Arrays:
        y = (frame.busy == "quiet").to_numpy(np.int64)
        return Arrays(encode(frame, encoding), y)

    result = train_torch(
        arrays(train), arrays(val), spec, TrainConfig(epochs=40, patience=40)
    )
    model = result.model.eval()
    x = arrays(test).x
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    accuracy = (expected.argmax(1) == arrays(test).y).mean()
    assert accuracy >= 0.95, accuracy  # temperature alone: the quiet share, 0.7
    path = export_onnx(model, 2, tmp_path / "fp32.onnx")
    np.testing.assert_allclose(
        OnnxRuntimeModel(path).logits(x), expected, rtol=1e-4, atol=1e-4
    )
    # a date before the origin, and a gap, in the file as in torch
    early = encode(
        pd.DataFrame(
            {"started": ["2019-05-04 08:00", None], "temperature": [3.0, 4.0]}
        ),
        encoding,
    )
    with torch.no_grad():
        np.testing.assert_allclose(
            OnnxRuntimeModel(path).logits(early),
            model(torch.from_numpy(early)).numpy(),
            rtol=1e-4,
            atol=1e-4,
        )
    int8 = quantize_int8_static(path, tmp_path / "int8.onnx", x[:64])
    agree = (OnnxRuntimeModel(int8).logits(x).argmax(1) == expected.argmax(1)).mean()
    assert agree >= 0.95, agree
    # the same file on a CPU without VNNI, where full-range int8 weights saturated
    # ONNX Runtime's 16-bit sums (0.898 there, 1.0 here, before 7-bit weights)
    elsewhere = logits_without_vnni(int8, x, tmp_path).argmax(1)
    agree = (elsewhere == expected.argmax(1)).mean()
    assert agree >= 0.95, agree
    # the dates' arithmetic (its own Sub and Div) stays in float up to the mean's
    # subtraction: quantized, the hour would be rounded onto an int8 scale
    ops = []
    for node in onnx.load(int8).graph.node:
        if any(name.endswith("standardize.mean") for name in node.input):
            break
        ops.append(node.op_type)
    assert "Mod" in ops and "QuantizeLinear" not in ops, ops


def _params(features: dict):
    from components.config import parse_params

    raw = default_params_dict()
    raw["data"] = {
        "name": "rentals",
        "source": "data/sources/r.csv",
        "label_column": "busy",
    }
    raw["validation"] = {"labels": ["busy", "quiet"], "max_class_kl_divergence": 0.2}
    raw["features"] = features
    return parse_params(raw)


def test_the_contract_counts_what_is_not_a_date(table):
    params = _params(DATED)
    ok = validate_batch(table, params.validation, FEATURES, "busy", params.features)
    assert ok.success, ok.summary()
    words = table["started"].where(table.index >= 30, "yesterday")
    broken = table.assign(started=words)
    outcome = validate_batch(
        broken, params.validation, FEATURES, "busy", params.features
    )
    assert not outcome.success
    assert (
        "expect_column_values_to_be_dateutil_parseable(started): 30 of 3000 (1.0%, "
        "allowed 0.0%)" in outcome.summary()
    ), outcome.summary()


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ({"kind": "datetime"}, "parts are given exactly for kind datetime"),
        ({"parts": ["hour"]}, "parts are given exactly for kind datetime"),
        ({"kind": "datetime", "parts": []}, "name at least one"),
        ({"kind": "datetime", "parts": ["hour", "hour"]}, "names a part twice"),
        ({"kind": "datetime", "parts": ["week"]}, "features.columns.started.parts.0"),
        (
            {"kind": "datetime", "parts": ["hour"], "missing": "constant", "fill": "x"},
            "fill 'x' is not an ISO 8601 date",
        ),
    ],
)
def test_a_wrong_datetime_column_is_one_line_naming_the_key(column, message):
    with pytest.raises(ConfigError, match="^params: ") as info:
        _params({"columns": {"started": column}})
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_dates_are_left_out_of_drift(table):
    """A later window's timestamps all lie past the training rows': that is time,
    not drift; the other columns are still compared."""
    cfg = FeaturesConfig.model_validate(DATED)
    encoding = fit_encoding(table, FEATURES, cfg)
    log = table.iloc[2500:].rename(columns={"started": "f0", "temperature": "f1"})
    log = log.assign(f0="2031-01-01 08:00", label=log.busy, ts=range(len(log)))
    reference, current = drift.serving_frames(
        table.iloc[:2500], log, 500, label_column="busy", encoding=encoding
    )
    assert list(reference.columns) == list(current.columns) == ["f1", "prediction"]


def test_describe_proposes_the_parts_and_the_table_meets_the_proposal(
    table, tmp_path, monkeypatch
):
    from components.config import parse_params
    from components.data.validate import check_file
    from tests.components.test_describe import describe_table, in_sources, params_with

    path = in_sources(tmp_path, monkeypatch, "rentals.csv")
    table.to_csv(path, index=False)
    text, proposal = describe_table(path, "busy")
    assert proposal["features"]["columns"]["started"] == {
        "kind": "datetime",
        "parts": ["month", "dayofweek", "hour"],
    }
    assert "#   started: dates, 2023-01-01..2024-12-" in text, text
    params = parse_params(params_with(proposal, registry={"model_name": "r"}))
    outcome = check_file(path, params, None)
    assert outcome.success, outcome.summary()


def test_a_parquet_table_with_timestamps_is_read_as_dates(table, tmp_path, monkeypatch):
    """Parquet keeps timestamps as timestamps: describe still proposes a datetime,
    the contract (GX's dateutil check takes text only) passes, and the model
    input is the same as from the text."""
    from components.config import parse_params
    from components.data.validate import check_file
    from tests.components.test_describe import describe_table, in_sources, params_with

    stamped = table.assign(
        started=pd.to_datetime(table["started"], utc=True, format="mixed")
    )
    stamped.loc[5, "started"] = pd.NaT
    path = in_sources(tmp_path, monkeypatch, "rentals.parquet")
    stamped.to_parquet(path, index=False)
    _, proposal = describe_table(path, "busy")
    assert proposal["features"]["columns"]["started"]["kind"] == "datetime"
    params = parse_params(params_with(proposal, registry={"model_name": "r"}))
    outcome = check_file(path, params, None)
    assert outcome.success, outcome.summary()
    cfg = FeaturesConfig.model_validate(DATED)
    encoding = fit_encoding(table, FEATURES, cfg)
    from_text, from_stamps = encode(table, encoding), encode(stamped, encoding)
    assert np.isnan(from_stamps[5, 0])
    keep = np.arange(len(table)) != 5
    np.testing.assert_array_equal(from_stamps[keep], from_text[keep])
    # a date32 column (days only) reads back as datetime.date objects
    days = table.assign(
        started=pd.to_datetime(table["started"], format="mixed", utc=True)
    )
    days = days.assign(started=days["started"].dt.date)
    days.to_parquet(path, index=False)
    back = pd.read_parquet(path)
    assert back["started"].dtype == object
    outcome = check_file(path, params, None)  # days only: some rows now repeat
    assert "dateutil" not in outcome.summary(), outcome.summary()
    midnight = pd.to_datetime(table["started"], format="mixed", utc=True).dt.normalize()
    np.testing.assert_array_equal(
        encode(back, encoding), encode(table.assign(started=midnight), encoding)
    )
    # "17" is a date to dateutil, not to the model: the contract counts it
    numbers = table.assign(started=table["started"].where(table.index >= 30, "17"))
    assert np.isnan(encode(numbers, encoding)[:30, 0]).all()
    numbers.to_csv(tmp_path / "numbers.csv", index=False)
    outcome = check_file(tmp_path / "numbers.csv", params, None)
    assert "dateutil_parseable(started): 30 of 3000 (1.0%" in outcome.summary()


@pytest.mark.slow
def test_a_table_with_dates_goes_through_the_stages_as_described(table, tmp_path):
    """`dvc repro optimize` on the rentals CSV with describe's proposal, unedited:
    validated, trained on the parts, exported and quantized; the ONNX file takes
    the minutes and answers as the evaluation measured."""
    import json

    from tests.components.test_describe import describe_table, params_with
    from tests.conftest import dvc_in, make_project

    table.to_csv(tmp_path / "rentals.csv", index=False)
    _, proposal = describe_table(tmp_path / "rentals.csv", "busy")
    assert proposal["data"]["source"] == "data/sources/rentals.csv"
    project = make_project(
        tmp_path / "project", params_with(proposal, registry={"model_name": "r"})
    )
    table.to_csv(project / "data/sources/rentals.csv", index=False)
    dvc_in(project, "repro", "evaluate", "optimize")
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, metrics
    card = json.loads((project / "data/prepared/data_card.json").read_text())
    assert card["columns"]["started"]["parts"] == ["month", "dayofweek", "hour"]
    report = json.loads((project / "reports/optimize/variants.json").read_text())
    encoding = {c["name"]: c for c in report["inputs"]["encoding"]}
    assert encoding["started"]["kind"] == "datetime"
    assert encoding["started"]["origin"] == 19358  # 2023-01-01
    shipped = {v["name"]: v for v in report["variants"]}[report["ship_variant"]]
    assert shipped["accuracy"] >= 0.9, shipped  # int8 left the dates' math in float
    # The date arithmetic converts, but TFLM has no kernel for part of it: no
    # micro file, and the stage said why (it stopped on TFLM's RuntimeError before).
    assert "micro_int8" not in {v["name"] for v in report["variants"]}
    assert not list((project / "models/variants").glob("*.micro.tflite"))
