"""A user's own table: `features:` declares each column's kind and gap policy, the
contract checks the raw columns by kind, and the fitted preprocessing lives inside
the exported model, so the ONNX file takes raw rows (categories as their index,
gaps as NaN). On the Palmer penguins table (strings and NA gaps, as shipped)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from palmerpenguins import load_penguins

from components.config import FeaturesConfig
from components.data.contract import validate_batch
from components.data.features import encode, fit_encoding
from components.errors import ConfigError
from components.optimization.compress import export_onnx, quantize_int8_static
from components.optimization.runtime import OnnxRuntimeModel
from components.training.model import ModelSpec, build_model, network_inputs
from tests.conftest import default_params_dict

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
FEATURES = ["island", *NUMERIC, "sex"]
PENGUIN_FEATURES = {
    "drop": ["year"],
    "columns": {
        "island": {"kind": "categorical", "values": ["Biscoe", "Dream", "Torgersen"]},
        "sex": {
            "kind": "categorical",
            "values": ["female", "male"],
            "missing": "most_frequent",
            "indicator": True,
        },
        **{c: {"missing": "median", "max_missing": 0.02} for c in NUMERIC},
    },
}


def penguin_features() -> FeaturesConfig:
    return FeaturesConfig.model_validate(PENGUIN_FEATURES)


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_penguins().drop(columns="year")


def _params(**features: object):
    from components.config import parse_params

    raw = default_params_dict()
    raw["data"] = {
        "name": "penguins",
        "source": "data/sources/p.csv",
        "label_column": "species",
    }
    raw["validation"] = {"labels": ["Adelie", "Chinstrap", "Gentoo"]}
    raw["features"] = features or PENGUIN_FEATURES
    return parse_params(raw)


def test_the_encoding_is_fitted_on_the_training_rows(penguins):
    cfg = _params().features
    encoding = {c.name: c for c in fit_encoding(penguins, FEATURES, cfg)}
    sex, island, mass = encoding["sex"], encoding["island"], encoding["body_mass_g"]
    assert sex.categories == ["female", "male"] and sex.indicator
    assert sex.fill == 1.0  # 168 male, 165 female, 11 NA: most frequent is "male"
    assert island.categories == ["Biscoe", "Dream", "Torgersen"]
    assert np.isnan(island.fill)  # refuse: no gap allowed, none filled
    assert mass.fill == float(penguins.body_mass_g.median())
    x = encode(penguins, list(encoding.values()))
    assert x.shape == (344, 6) and x.dtype == np.float32
    assert np.isnan(x[:, 5]).sum() == 11  # sex's NA rows: gaps, filled in the model
    assert set(np.unique(x[:, 0])) == {0.0, 1.0, 2.0}
    # An unseen category is NaN as well, for the contract and serving to refuse.
    unseen = encode(penguins.head(1).assign(island="Atlantis"), list(encoding.values()))
    assert np.isnan(unseen[0, 0])
    learned = FeaturesConfig.model_validate(
        {"columns": {"island": {"kind": "categorical"}}}
    )
    [column] = fit_encoding(penguins, ["island"], learned)
    assert column.categories == ["Biscoe", "Dream", "Torgersen"]


def test_the_exported_model_takes_raw_rows_with_gaps(penguins, tmp_path):
    """Imputation, indicators and one-hot are ops in the ONNX graph: the file and
    the torch model answer the same on rows with gaps; the int8 file keeps the
    preprocessing in float (quantized, penguins fell from 0.98 to 0.44). The
    network is untrained, so its margins between classes are small and vary with
    its random weights: over 30 seeds the int8 file agreed on 0.85-1.00 of rows
    (median 0.99), and unseeded this test failed one CI run at 0.81. Seeded."""
    torch.manual_seed(0)
    cfg = _params().features
    from components.data.features import encoding_to_json

    encoding = encoding_to_json(fit_encoding(penguins, FEATURES, cfg))
    spec = ModelSpec(
        len(FEATURES),
        ["Adelie", "Chinstrap", "Gentoo"],
        FEATURES,
        16,
        encoding=encoding,
    )
    assert network_inputs(spec) == 3 + 4 + 2 + 1  # island one-hot, numbers, sex, gap
    model = build_model(spec).eval()
    x = encode(penguins, [*map(_column, encoding)])
    model[0].fit(torch.from_numpy(x))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.isfinite(expected).all()
    fp32 = OnnxRuntimeModel(export_onnx(model, len(FEATURES), tmp_path / "fp32.onnx"))
    np.testing.assert_allclose(fp32.logits(x), expected, rtol=1e-4, atol=1e-4)
    int8 = quantize_int8_static(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", x[:64])
    logits = OnnxRuntimeModel(int8).logits(x)
    assert np.isfinite(logits).all()
    agree = (logits.argmax(1) == expected.argmax(1)).mean()
    assert agree > 0.95, agree


def _column(raw: dict):
    from components.data.features import encoding_from_json

    return encoding_from_json([raw])[0]


def test_the_contract_checks_raw_columns_by_kind(penguins):
    params = _params()
    ok = validate_batch(
        penguins, params.validation, FEATURES, "species", params.features
    )
    assert ok.success, ok.summary()
    unseen = penguins.assign(island=penguins.island.where(penguins.index > 9, "Mars"))
    outcome = validate_batch(
        unseen, params.validation, FEATURES, "species", params.features
    )
    assert not outcome.success
    assert (
        "expect_column_values_to_be_in_set(island): 10 of 344 (2.9%, allowed 0.0%)"
        in (outcome.summary())
    )
    gappy = penguins.assign(body_mass_g=penguins.body_mass_g.where(penguins.index > 20))
    outcome = validate_batch(
        gappy, params.validation, FEATURES, "species", params.features
    )
    assert "expect_column_values_to_not_be_null(body_mass_g): 22 of 344 (6.4%, " in (
        outcome.summary()
    )
    assert "allowed 2.0%" in outcome.summary()


def test_a_renamed_column_is_named_missing_first(penguins):
    """A column `features:` describes, renamed in the source: before, the new name
    passed as a plain numeric column and nothing said the described one was gone
    (or, with validation.feature_columns set, four findings, none naming it)."""
    params = _params()
    renamed = penguins.rename(columns={"bill_length_mm": "bill_len"})
    columns = [c for c in renamed.columns if c != "species"]
    outcome = validate_batch(
        renamed, params.validation, columns, "species", params.features
    )
    assert not outcome.success
    first = outcome.failures[0]
    assert (first.expectation, first.column) == (
        "expect_column_to_exist",
        "bill_length_mm",
    )
    assert "'bill_length_mm' is missing from the table" in outcome.summary()
    # Checks that need the column say so in words, not "list index out of range".
    strict = validate_batch(
        renamed, params.validation, FEATURES, "species", params.features
    )
    text = strict.summary()
    assert "missing ['bill_length_mm'], not expected ['bill_len']" in text
    assert "list index out of range" not in text and "observed None" not in text
    # An unknown label: the class balance says why it was not measured.
    alien = penguins.assign(species=penguins.species.where(penguins.index > 5, "Emu"))
    text = validate_batch(
        alien, params.validation, FEATURES, "species", params.features
    ).summary()
    assert "observed None" not in text and "outside validation.labels" in text


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            {"columns": {"sex": {"kind": "categorical", "missing": "median"}}},
            "features.columns.sex: Value error, missing 'median' needs kind numeric",
        ),
        ({"columns": {"x": {"missing": "constant"}}}, "fill is given exactly when"),
        ({"columns": {"x": {"indicator": True}}}, "indicator needs a missing policy"),
        ({"columns": {"x": {}}, "drop": ["x"]}, "both described and dropped"),
        ({"columns": {"species": {}}}, "'species' is data.label_column"),
    ],
)
def test_a_wrong_features_section_is_one_line_naming_the_key(features, message):
    with pytest.raises(ConfigError, match="^params: ") as info:
        _params(**features)
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_a_plain_model_takes_its_own_columns_of_a_wider_raw_row():
    """gapminder's numbers only, `country` dropped: the loop's delayed labels are
    the source's raw rows, all columns, and the check stopped with "column
    'country' holds text, and this model takes numbers only"."""
    from components.errors import DataContractError
    from components.optimization.runtime import model_rows

    rows = pd.DataFrame(
        {"country": ["Chad", "Peru"], "year": [1952, 2007], "gdp": [1.5, 2.5]}
    ).assign(continent=["Africa", "Americas"])
    x = model_rows(rows, label_column="continent", features=("year", "gdp"))
    assert x.tolist() == [[1952.0, 1.5], [2007.0, 2.5]]
    with pytest.raises(DataContractError, match="column 'gdp' is missing"):
        model_rows(
            rows.drop(columns="gdp"), label_column="continent", features=("year", "gdp")
        )
    with pytest.raises(DataContractError, match="'country' holds text"):
        model_rows(rows, label_column="continent")
