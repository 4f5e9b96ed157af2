"""`edgeloop data describe`: the proposal for a user's table is valid params, the
table meets the contract it proposes, and the pipeline's stages train on it. On
two tables shipped by packages: Palmer penguins (strings, NA gaps) and plotly's
restaurant tips (a Yes/No column, text categories)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from palmerpenguins import load_penguins
from plotly.data import tips

from components.config import parse_params
from components.data.validate import check_file
from tests.conftest import BIN, FAST_OPTIMIZE, default_params_dict, make_project


def _describe(path: Path, label: str) -> tuple[str, dict]:
    done = subprocess.run(
        [str(BIN / "edgeloop"), "data", "describe", str(path), "--label", label],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout, yaml.safe_load(done.stdout)


def _with(proposal: dict, **more: dict) -> dict:
    raw = default_params_dict(optimize=FAST_OPTIMIZE, **more)
    raw["data"] = proposal["data"] | {"image_shape": None}
    raw["validation"] = proposal["validation"]
    raw["features"] = proposal["features"]
    return raw


def test_the_penguins_proposal_is_params_the_table_meets(tmp_path):
    table = tmp_path / "penguins.csv"
    load_penguins().to_csv(table, index=False)
    text, proposal = _describe(table, "species")
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
    params = parse_params(_with(proposal, registry={"model_name": "p"}))
    outcome = check_file(table, params, None)
    assert outcome.success, outcome.summary()


def test_a_table_with_a_yes_no_column_trains_through_the_stages(tmp_path):
    """plotly's tips: `smoker` Yes/No is proposed boolean, `sex`/`day` categorical;
    `dvc repro` validates, trains and evaluates it as proposed, with no edit."""
    project = tmp_path / "project"
    frame = tips()
    text, proposal = _describe(_saved(frame, tmp_path / "tips.csv"), "time")
    columns = proposal["features"]["columns"]
    assert columns["smoker"] == {"kind": "boolean"}
    assert columns["day"]["values"] == ["Fri", "Sat", "Sun", "Thur"]
    proposal["data"]["source"] = "tips.csv"
    make_project(project, _with(proposal, registry={"model_name": "tips"}))
    _saved(frame, project / "tips.csv")
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(BIN / "dvc"), "repro", "evaluate"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    # Lunch is Thursday and Friday, dinner the weekend: day alone tells most.
    assert metrics["test_accuracy"] >= 0.85, metrics


def _saved(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["a", "b", None, "a"], "text, 2 distinct, 1 gaps (25.0%)"),
        (["2024-01-02", "2024-02-03", "2024-03-04", None], "dates: no datetime kind"),
        ([1, 2, 3, 4], "numeric, 4 distinct, 1..4: a distinct integer per row"),
        (["yes", "no", "no", "yes"], "boolean"),
    ],
)
def test_each_kind_is_noted_with_what_was_measured(tmp_path, values, expected):
    frame = pd.DataFrame({"x": values, "label": [0, 1, 0, 1]})
    text, _ = _describe(_saved(frame, tmp_path / "t.csv"), "label")
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
