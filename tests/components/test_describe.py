"""`edgeloop data describe`: the proposal for a user's table is valid params, the
table meets the contract it proposes, and the pipeline's stages train on it. On
two tables shipped by packages: Palmer penguins (strings, NA gaps) and plotly's
restaurant tips (a Yes/No column, text categories)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from palmerpenguins import load_penguins
from plotly.data import tips

from components.config import parse_params
from components.data.validate import check_file
from tests.conftest import BIN, FAST_OPTIMIZE, default_params_dict


def describe_table(path: Path, label: str) -> tuple[str, dict]:
    done = subprocess.run(
        [str(BIN / "edgeloop"), "data", "describe", str(path), "--label", label],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout, yaml.safe_load(done.stdout)


def params_with(proposal: dict, **more: dict) -> dict:
    raw = default_params_dict(optimize=FAST_OPTIMIZE, **more)
    raw["data"] = proposal["data"] | {"image_shape": None}
    raw["validation"] = proposal["validation"]
    raw["features"] = proposal["features"]
    return raw


def test_the_penguins_proposal_is_params_the_table_meets(tmp_path):
    table = tmp_path / "penguins.csv"
    load_penguins().to_csv(table, index=False)
    text, proposal = describe_table(table, "species")
    columns = proposal["features"]["columns"]
    assert columns["island"] == {
        "kind": "categorical",
        "values": ["Biscoe", "Dream", "Torgersen"],
    }
    assert columns["sex"]["missing"] == "most_frequent" and columns["sex"]["indicator"]
    assert columns["body_mass_g"]["missing"] == "median"
    assert "year" not in columns  # numeric and gap-free: plain
    assert proposal["validation"]["labels"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert "#   sex: text, 2 distinct, 11 gaps (3.2%)" in text
    params = parse_params(params_with(proposal, registry={"model_name": "p"}))
    outcome = check_file(table, params, None)
    assert outcome.success, outcome.summary()


def test_the_tips_proposal_reads_yes_no_as_boolean_and_the_table_meets_it(tmp_path):
    """plotly's tips: `smoker` Yes/No is proposed boolean, `sex`/`day` categorical.
    It trains and serves as proposed, with no edit, in
    tests/flows/test_own_table.py."""
    table = _saved(tips(), tmp_path / "tips.csv")
    _, proposal = describe_table(table, "time")
    columns = proposal["features"]["columns"]
    assert columns["smoker"] == {"kind": "boolean"}
    assert columns["day"]["values"] == ["Fri", "Sat", "Sun", "Thur"]
    assert proposal["validation"]["labels"] == ["Dinner", "Lunch"]
    params = parse_params(params_with(proposal, registry={"model_name": "t"}))
    outcome = check_file(table, params, None)
    assert outcome.success, outcome.summary()


def _saved(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["a", "b", None, "a"], "text, 2 distinct, 1 gaps (25.0%)"),
        (
            ["2024-01-02", "2024-02-03", "2024-03-04", None],
            "dates, 2024-01-02..2024-03-04, no time of day: parts month, dayofweek, 1",
        ),
        (
            ["2024-01-02 08:00", "2024-01-02 17:30", "2024-01-03 08:00", "2024-01-04"],
            "dates, 2024-01-02..2024-01-04, times of day vary: parts month, dayofweek, "
            "hour, 0 gaps",
        ),
        ([1, 2, 3, 4], "numeric, 4 distinct, 1..4: a distinct integer per row"),
        (["yes", "no", "no", "yes"], "boolean"),
        ([None, None, None, None], "no value at all, 4 gaps (100.0%): dropped"),
    ],
)
def test_each_kind_is_noted_with_what_was_measured(tmp_path, values, expected):
    frame = pd.DataFrame({"x": values, "label": [0, 1, 0, 1]})
    text, _ = describe_table(_saved(frame, tmp_path / "t.csv"), "label")
    assert f"#   x: {expected}" in text, text


def test_an_unknown_label_column_names_the_columns(tmp_path):
    path = _saved(pd.DataFrame({"a": [1], "b": [2]}), tmp_path / "t.csv")
    done = subprocess.run(
        [str(BIN / "edgeloop"), "data", "describe", str(path), "--label", "y"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "no label column 'y'; columns: ['a', 'b']" in done.stderr
    assert "Traceback" not in done.stderr
