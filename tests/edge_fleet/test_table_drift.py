"""Drift on a table, by column kind: the simulated labelling team's raw rows and a
device's encoded stream. Before, both cast the table's rows to float (`edgeloop
loop` on penguins stopped: "could not convert string to float: 'Torgersen'") and
drifted category indices as if they were pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

from components.data.contract import validate_batch
from components.data.features import encode, fit_encoding
from components.errors import ConfigError
from edge_fleet.sim.streams import DataStream, drift_kind, labelled_rows
from tests.components.test_features import FEATURES, _params


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_penguins().drop(columns="year")


@pytest.fixture(scope="module")
def encoding(penguins):
    return fit_encoding(penguins, FEATURES, _params().features)


def _labelled(
    penguins: pd.DataFrame, encoding, drift: str, rows: int = 200, **more
) -> pd.DataFrame:
    return labelled_rows(
        penguins,
        drift=drift,
        strength=3.0,
        rows=rows,
        value_range=None,
        label_column="species",
        encoding=encoding,
        **more,
    )


def test_the_labelling_team_returns_raw_rows_of_the_table(penguins, encoding):
    params = _params()
    rows = _labelled(penguins, encoding, "noise")
    assert list(rows.columns) == list(penguins.columns)
    # New rows only: the two whose numbers are all gaps drift to themselves, and
    # a copy of a known row would break the contract's duplicate bound.
    assert len(rows) == 198 and not rows.duplicated(subset=FEATURES).any()
    assert rows[FEATURES].merge(penguins[FEATURES], how="inner").empty
    # The table's own values: island names, sex words; the contract takes them.
    assert set(rows.island) <= {"Biscoe", "Dream", "Torgersen"}
    outcome = validate_batch(
        rows, params.validation, FEATURES, "species", params.features
    )
    assert outcome.success, outcome.summary()
    # A category's share moved (3/8 of the rows to the next island), and numbers
    # spread wider (noise of 3/4 of the column's spread).
    picked = penguins.sample(200, random_state=7)
    before = picked.island.value_counts(normalize=True)
    after = rows.island.value_counts(normalize=True)
    assert (after - before).abs().max() > 0.05, (before, after)
    assert rows.body_mass_g.std() > 1.1 * picked.body_mass_g.std()
    gappy = _labelled(penguins, encoding, "gaps")
    # Gaps only where the policy fills them; the contract sees the jump.
    assert gappy.island.notna().all() and gappy.sex.isna().mean() > 0.25
    assert not validate_batch(
        gappy, params.validation, FEATURES, "species", params.features
    ).success


def test_a_labelled_batch_holds_no_row_the_data_set_has(penguins, encoding):
    """Drawn from the training split, a batch must not repeat a row of the test
    split nor of an earlier batch: the contract's duplicate bound is over all
    the data. (Torgersen's all-gap row moved to Biscoe was Biscoe's all-gap row
    of the test split, and the retraining the loop started stopped on it.)"""
    train = penguins.iloc[:250]
    first = _labelled(train, encoding, "brightness", 250, seed=1)
    known = pd.concat([penguins, first], ignore_index=True)
    second = _labelled(train, encoding, "brightness", 250, seed=2, known=known)
    assert not pd.concat([known, second])[FEATURES].duplicated().any()
    assert len(second) > 100  # new rows still (the categories moved at random)


def test_a_device_stream_drifts_each_encoded_column_by_kind(penguins, encoding):
    x = encode(penguins, encoding)
    stream = DataStream(x, seed=1, drift="brightness", strength=4.0, encoding=encoding)
    batch = stream.batch(500)
    island = [c.name for c in encoding].index("island")
    mass = [c.name for c in encoding].index("body_mass_g")
    # Categories stay categories (an index the model knows), in other shares.
    assert set(np.unique(batch[:, island])) <= {0.0, 1.0, 2.0}
    before = np.bincount(x[:, island].astype(int), minlength=3) / len(x)
    after = np.bincount(batch[:, island].astype(int), minlength=3) / len(batch)
    assert np.abs(after - before).max() > 0.1, (before, after)
    # Numbers shifted by strength/4 of their spread: one standard deviation.
    shift = np.nanmean(batch[:, mass]) - np.nanmean(x[:, mass])
    assert shift == pytest.approx(np.nanstd(x[:, mass]), rel=0.2)
    with pytest.raises(ValueError, match="drift 'rotation' on a table"):
        DataStream(x, seed=1, drift="rotation", strength=1, encoding=encoding).batch(1)


def test_the_drift_is_named_for_the_datas_kind():
    assert drift_kind("auto", table=True) == "shift"  # one a retrain can learn
    assert drift_kind("auto", table=False) == "noise"
    assert drift_kind("brightness", table=True) == "shift"
    with pytest.raises(ConfigError, match="--drift 'rotation': expected auto or one"):
        drift_kind("rotation", table=True)
    with pytest.raises(ConfigError, match="on images"):
        drift_kind("gaps", table=False)


def test_an_all_numeric_table_drifts_as_a_table(tmp_path):
    """A table with no `features:` section has no fitted encoding; the simulator
    drifts it column by column all the same (it drifted it as images before:
    noise of 3 on every column, 3 grams or 3 radii alike); images stay images."""
    from sklearn.datasets import load_breast_cancer

    from components.config import parse_params
    from scenarios.labelling import simulated_encoding
    from tests.conftest import default_params_dict

    frame = load_breast_cancer(as_frame=True).frame
    raw = default_params_dict()
    raw["data"] = {
        "name": "cancer",
        "source": "data/sources/c.csv",
        "label_column": "target",
        "image_shape": None,
    }
    raw["validation"] = {"labels": [0, 1]}
    encoding = simulated_encoding(tmp_path / "model", parse_params(raw), frame)
    assert len(encoding) == 30 and {c.kind for c in encoding} == {"numeric"}
    assert drift_kind("auto", table=bool(encoding)) == "shift"
    rows = labelled_rows(
        frame,
        drift="shift",
        strength=3.0,
        rows=50,
        value_range=None,
        label_column="target",
        encoding=encoding,
    )
    picked = frame.sample(50, random_state=7).drop(columns="target")
    moved = rows.drop(columns="target").to_numpy() - picked.to_numpy()
    spread = picked.std(ddof=0).to_numpy()  # of the rows the team labelled
    # each column by 3/4 of its own spread: 3 radii are not 3 areas
    np.testing.assert_allclose(
        moved, np.broadcast_to(0.75 * spread, moved.shape), rtol=1e-4
    )
    images = parse_params(default_params_dict())
    assert simulated_encoding(tmp_path / "model", images, frame) == []
