"""`edgeloop data describe`: the proposal for a user's table is valid params, the
table meets the contract it proposes, and the pipeline's stages train on it. On
two tables shipped by packages: Palmer penguins (strings, NA gaps) and plotly's
restaurant tips (a Yes/No column, text categories)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from palmerpenguins import load_penguins
from plotly.data import gapminder, tips

from components.config import parse_params
from components.config.features import FeaturesConfig
from components.data.describe import baseline, proposed_features, wilson_low
from components.data.validate import check_file
from tests.conftest import (
    BIN,
    FAST_OPTIMIZE,
    REPO,
    default_params_dict,
    dvc_in,
    make_project,
)


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
    gates = proposal.get("registry", {}).get("gates", {})
    raw["registry"]["gates"] = raw["registry"].get("gates", {}) | gates
    return raw


def in_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """A project's source folder (paths.sources) as the working folder's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "sources").mkdir(parents=True)
    return Path("data/sources") / name


def test_the_penguins_proposal_is_params_the_table_meets(tmp_path, monkeypatch):
    table = in_sources(tmp_path, monkeypatch, "penguins.csv")
    load_penguins().to_csv(table, index=False)
    text, proposal = describe_table(table, "species")
    assert proposal["data"]["source"] == "data/sources/penguins.csv"
    assert "# copy" not in text  # already where DVC watches
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


def test_the_tips_proposal_reads_yes_no_as_boolean_and_the_table_meets_it(
    tmp_path, monkeypatch
):
    """plotly's tips: `smoker` Yes/No is proposed boolean, `sex`/`day` categorical.
    It trains and serves as proposed, with no edit, in
    tests/flows/test_own_table.py."""
    table = _saved(tips(), in_sources(tmp_path, monkeypatch, "tips.csv"))
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
        (
            # A model year written as a date (the cars table): it was read as
            # month and weekday, and the year never reached the model.
            ["1970-01-01", "1971-01-01", "1982-01-01", "1970-01-01"],
            "dates, 1970-01-01..1982-01-01, one value per year (every date "
            "1 January): parts year, 0 gaps",
        ),
        (
            ["2024-01-01", "2024-02-01", "2024-03-01", "2024-02-01"],
            "dates, 2024-01-01..2024-03-01, one value per month (every date the "
            "1st): parts year, month, 0 gaps",
        ),
        ([1, 2, 3, 4], "numeric, 4 distinct, 1..4: a distinct integer per row"),
        # distinct per row but spread wide: a count, not a row number (gapminder's
        # `pop` was dropped as an identifier)
        (
            [8425333, 9240934, 10267083, 11537966],
            "numeric, 4 distinct, 8425333..11537966, 0 gaps",
        ),
        (["yes", "no", "no", "yes"], "boolean"),
        ([None, None, None, None], "no value at all, 4 gaps (100.0%): dropped"),
    ],
)
def test_each_kind_is_noted_with_what_was_measured(tmp_path, values, expected):
    frame = pd.DataFrame({"x": values, "label": [0, 1, 0, 1]})
    text, proposal = describe_table(_saved(frame, tmp_path / "t.csv"), "label")
    assert f"#   x: {expected}" in text, text
    # Proposed where DVC watches it, with the copy to make.
    assert proposal["data"]["source"] == "data/sources/t.csv"
    assert f"# copy {tmp_path / 't.csv'} to data/sources/t.csv" in text


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


def test_write_merges_a_proposal_that_runs_as_written(tmp_path):
    """`describe --write`: the proposal merged into params.yaml (other sections and
    their comments kept), the table copied where DVC watches it, a model name of
    its own and `data.image_shape: null`; DVC's prepare and validate stages run on
    it with no edit. Before, the pasted proposal failed with "Parameters
    'data.image_shape' are missing" and registered as edgeloop-digits."""
    project = make_project(tmp_path / "project", default_params_dict())
    shutil.copy(REPO / "params.yaml", project / "params.yaml")  # with its comments
    load_penguins().to_csv(tmp_path / "penguins.csv", index=False)
    done = subprocess.run(
        [str(BIN / "edgeloop"), "data", "describe", str(tmp_path / "penguins.csv")]
        + ["--label", "species", "--write"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "copied" in done.stdout and "edgeloop-penguins" in done.stdout
    params = parse_params(yaml.safe_load((project / "params.yaml").read_text()))
    assert params.data.source == "data/sources/penguins.csv"
    assert params.data.image_shape is None
    assert params.registry.model_name == "edgeloop-penguins"
    assert params.features.columns["island"].kind == "categorical"
    # The gate proposed from a baseline measured on the table, with its reason;
    # the other gates as they were (the digits' 0.95 was no table's measure).
    assert params.registry.gates.min_test_accuracy == 0.91
    assert params.registry.gates.max_ship_kb == 256
    text = (project / "params.yaml").read_text()
    assert "min_test_accuracy: 0.91  # a linear model on the network's inputs" in text
    assert "registry.gates.min_test_accuracy: 0.91" in done.stdout
    assert "# newly labelled rows for the next training run" in text  # kept
    assert "#   sex: text, 2 distinct, 11 gaps (3.2%)" in text  # the measured notes
    assert (project / "params.yaml.before-describe").read_text() == (
        REPO / "params.yaml"
    ).read_text()
    dvc_in(project, "repro", "validate")


def test_the_gate_is_proposed_from_a_cross_validated_baseline():
    """A model as good as the table's baseline passes its gate on a test split
    of the table's size: the low end of the Wilson interval (at 1.0, where the
    plain standard error leaves no margin, too)."""
    assert wilson_low(1.0, 22) == pytest.approx(0.846, abs=1e-3)
    assert wilson_low(0.988, 52) == pytest.approx(0.908, abs=1e-3)
    assert wilson_low(0.9, 10_000) == pytest.approx(0.894, abs=1e-3)
    table = load_penguins()
    base = baseline(table, "species", proposed_features(table, "species"))
    assert base is not None and base.accuracy > 0.97 and base.folds == 5
    assert base.test_rows == 52 and base.min_test_accuracy == 0.91
    # tips: a gate of 0.84 (a meal told by its day), not the digits' 0.95
    tips_base = baseline(tips(), "time", proposed_features(tips(), "time"))
    assert tips_base is not None and tips_base.min_test_accuracy == 0.84
    # one class, a class of one row, or no input: no proposal
    assert baseline(table.head(3), "species", FeaturesConfig()) is None
    assert baseline(table.iloc[150:153], "species", FeaturesConfig()) is None
    dropped = FeaturesConfig(drop=[c for c in table.columns if c != "species"])
    assert baseline(table, "species", dropped) is None


def test_the_gate_is_what_a_linear_model_on_the_networks_inputs_reaches():
    """gapminder's continent: trees split the `iso_num` country codes (0.986),
    which an MLP on standardized numbers does not learn (0.662 measured); a gate
    from the trees refused every network. The gate is the linear model's, the
    trees' figure is said beside it."""
    table = gapminder()
    base = baseline(table, "continent", proposed_features(table, "continent"))
    assert base is not None and base.trees > 0.95
    assert 0.5 < base.accuracy < 0.7
    assert base.min_test_accuracy < 0.6  # the network's measured 0.662 passes
    assert f"Trees (HistGradientBoosting) reached {base.trees:.3f}" in base.note
