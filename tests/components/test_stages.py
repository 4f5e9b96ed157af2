"""The DVC stage entry points on a plugged-in CSV data set (no code changes), and a
bad batch that is quarantined while the last good prepared data stays as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_wine

from components.data import prepare, validate
from components.evaluation import evaluate
from components.training import train
from tests.conftest import default_params_dict, dvc_in, make_project

WINE_PARAMS = {
    "data": {
        "name": "wine",
        "source": "data/sources/wine.csv",
        "label_column": "label",
    },
    "validation": {
        "labels": [0, 1, 2],
        "feature_range": None,
        "column_ranges": {"alcohol": [10, 15], "magnesium": [50, 200]},
        "min_rows": 100,
    },
    "train": {"epochs": 60, "batch_size": 16, "patience": 10},
    "registry": {"model_name": "edgeloop-wine"},
}


@pytest.fixture
def wine_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    Path("data/sources").mkdir(parents=True)
    frame.to_csv("data/sources/wine.csv", index=False)
    Path("params.yaml").write_text(yaml.safe_dump(WINE_PARAMS))
    return tmp_path


def test_a_csv_source_runs_through_every_stage(wine_project: Path):
    for stage in (prepare, validate, train, evaluate):
        assert stage.main([]) == 0, stage.__name__
    card = json.loads(Path("data/prepared/data_card.json").read_text())
    assert card["rows"] == 178 and card["features"] == 13
    assert sum(s["rows"] for s in card["splits"].values()) == 178
    assert len(card["dvc_raw_md5"]) == 32
    assert "wine" in Path("data/prepared/data_card.md").read_text()
    metrics = json.loads(Path("reports/evaluate/metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9
    assert Path("reports/evaluate/confusion_matrix.png").stat().st_size > 1000


def test_a_bad_batch_is_quarantined_and_good_data_kept(wine_project: Path):
    assert prepare.main([]) == 0 and validate.main([]) == 0
    good = {p.name: p.read_bytes() for p in Path("data/prepared").iterdir()}

    frame = pd.read_csv("data/sources/wine.csv")
    frame.loc[7, "alcohol"] = 99.0
    frame.to_csv("data/sources/wine.csv", index=False)
    assert prepare.main([]) == 0
    assert validate.main([]) == 1

    assert {p.name: p.read_bytes() for p in Path("data/prepared").iterdir()} == good
    [kept] = list(Path("data/quarantine").iterdir())
    batch = pd.read_parquet(kept / "batch.parquet")
    assert len(batch) == 178 and batch.loc[7, "alcohol"] == 99.0
    assert (kept / "wine.parquet").exists()
    failure = json.loads(Path("reports/failed/validate.json").read_text())
    assert "expect_column_values_to_be_between(alcohol)" in failure["message"]
    assert str(kept) in failure["hint"]
    summary = Path("reports/validation/summary.md").read_text()
    assert "FAILED" in summary and "alcohol" in summary


def test_training_is_reproducible(wine_project: Path):
    assert prepare.main([]) == 0 and validate.main([]) == 0
    accuracies = []
    for _ in range(2):
        assert train.main([]) == 0 and evaluate.main([]) == 0
        metrics = json.loads(Path("reports/evaluate/metrics.json").read_text())
        accuracies.append(metrics["test_accuracy"])
    assert abs(accuracies[0] - accuracies[1]) <= 0.005


def test_an_edited_source_is_a_new_data_version(tmp_path: Path):
    """The source file is a DVC dependency of `prepare` (through `paths.sources`):
    a column renamed in place makes the stage stale. Before, `dvc status` said up
    to date and `edgeloop run` reused the old data version."""
    project = make_project(
        tmp_path / "project",
        default_params_dict(
            **{k: v for k, v in WINE_PARAMS.items() if k != "data"},
            data=WINE_PARAMS["data"] | {"image_shape": None},
        ),
    )
    source = project / "data/sources/wine.csv"
    load_wine(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(
        source, index=False
    )
    dvc_in(project, "repro", "prepare")
    assert "up to date" in dvc_in(project, "status", "prepare")
    source.write_text(source.read_text().replace("alcohol", "alcohol_pct", 1))
    status = dvc_in(project, "status", "prepare")
    assert "changed deps" in status and "data/sources" in status, status
