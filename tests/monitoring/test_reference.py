"""Each target's reference and delayed labels (monitoring/reference.py): a cohort's
own labelled rows in the champion's data become its reference, rows the champion was
not trained on are delayed labels; with its own noisy rows as the reference, a noisy
cohort no longer drifts (Evidently, real), with the training split it does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from components.config import parse_params
from components.errors import ServiceError
from edge_fleet.sim.streams import labelled_rows
from flows.monitor import References
from monitoring import drift
from monitoring.reference import (
    ChampionData,
    delayed_labels,
    general_rows,
    reference_rows,
)
from scenarios.labelling import pick_cohort
from tests.conftest import default_params_dict

PARAMS = parse_params(default_params_dict())
SOUTH = "cohort-south"


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def _noisy(train: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return labelled_rows(
        train,
        drift="noise",
        strength=3.0,
        rows=rows,
        value_range=(0, 16),
        label_column="label",
        seed=seed,
    )


def test_own_labelled_rows_become_the_reference_once_trained_on(tmp_path, digits):
    folder = tmp_path / "data" / "incoming" / "digits" / SOUTH
    folder.mkdir(parents=True)
    _noisy(digits, 300, 1).to_parquet(folder / "a.parquet")
    _noisy(digits, 100, 2).to_parquet(folder / "b.parquet")
    before = ChampionData("1", frozenset())
    after = ChampionData("2", frozenset({f"{SOUTH}/a.parquet"}))

    assert reference_rows(tmp_path, PARAMS, SOUTH, before) is None  # training split
    assert len(delayed_labels(tmp_path, PARAMS, SOUTH, before)) == 400
    assert len(reference_rows(tmp_path, PARAMS, SOUTH, after)) == 300
    assert len(delayed_labels(tmp_path, PARAMS, SOUTH, after)) == 100
    assert reference_rows(tmp_path, PARAMS, "cohort-north", after) is None
    assert delayed_labels(tmp_path, PARAMS, SOUTH, None) is None  # no champion

    # The quiet cohorts' reference: the training split without the south rows.
    train = pd.concat(
        [digits.iloc[:500], pd.read_parquet(folder / "a.parquet")], ignore_index=True
    )
    assert len(general_rows(tmp_path, PARAMS, train, after)) == 500
    assert len(general_rows(tmp_path, PARAMS, train, before)) == 800

    # Below `monitoring.target_reference_min_rows` the training split stays.
    few = ChampionData("3", frozenset({f"{SOUTH}/b.parquet"}))
    assert reference_rows(tmp_path, PARAMS, SOUTH, few) is None


def test_own_rows_are_the_reference_in_the_training_splits_columns(tmp_path, digits):
    """A table's incoming file has the source's columns, the training split only
    those the model takes: the reference is the latter (an extra column was a
    17th feature against the model's 15 on penguins, and the monitor failed)."""
    folder = tmp_path / "data" / "incoming" / "digits" / SOUTH
    folder.mkdir(parents=True)
    own = _noisy(digits, 300, 1)
    own.assign(site="north")[["site", *own.columns]].to_parquet(folder / "a.parquet")
    train = digits.iloc[:500]
    champion = ChampionData("2", frozenset({f"{SOUTH}/a.parquet"}))
    rows, source = References(tmp_path, PARAMS, train, champion).rows(SOUTH)
    assert list(rows.columns) == list(train.columns) and len(rows) == 300
    assert source == f"300 labelled rows of {SOUTH} (v2)"


def test_auto_cohort_is_one_that_never_drifted(tmp_path, digits):
    for name in ("north", "south"):
        folder = tmp_path / "data" / "incoming" / "digits" / f"cohort-{name}"
        folder.mkdir(parents=True)
        _noisy(digits, 250, 3).to_parquet(folder / "x.parquet")
    champion = ChampionData(
        "4", frozenset({"cohort-north/x.parquet", "cohort-south/x.parquet"})
    )
    assert pick_cohort(tmp_path, PARAMS, "auto", champion) == "east"
    assert pick_cohort(tmp_path, PARAMS, "south", champion) == "south"
    with pytest.raises(ServiceError, match="'west'"):
        pick_cohort(tmp_path, PARAMS, "west", champion)
    (tmp_path / "data" / "incoming" / "digits" / "cohort-east").mkdir()
    _noisy(digits, 250, 4).to_parquet(
        tmp_path / "data" / "incoming" / "digits" / "cohort-east" / "x.parquet"
    )
    everyone = ChampionData("5", champion.incoming_files | {"cohort-east/x.parquet"})
    with pytest.raises(ServiceError, match="every cohort"):
        pick_cohort(tmp_path, PARAMS, "auto", everyone)


def test_a_noisy_cohort_drifts_from_training_data_not_from_its_own_labels(digits):
    train, held_out = digits.iloc[:1200], digits.iloc[1200:]
    rng = np.random.default_rng(5)
    x_all = _noisy(held_out, len(held_out), 6)
    reports = []
    for _ in range(60):  # telemetry of devices whose inputs carry the same noise
        batch = x_all.iloc[rng.integers(0, len(x_all), 64)]
        x = batch.drop(columns="label").to_numpy(np.float64)
        counts = batch["label"].astype(str).value_counts()
        reports.append(
            {
                "inferences": 64,
                "class_counts": counts.to_dict(),
                "feature_stats": {"mean": list(x.mean(0)), "std": list(x.std(0))},
            }
        )
    cfg, scale = PARAMS.monitoring, np.sqrt(64)

    def share(reference_rows: pd.DataFrame) -> drift.DriftResult:
        reference, current = drift.device_frames(
            reference_rows,
            reports,
            batch=64,
            reference_batches=150,
            label_column="label",
        )
        return drift.check(
            SOUTH, reference, current, cfg, threshold_scale=scale, min_rows=30
        )

    assert share(train).drifted  # the spike
    own = share(_noisy(train, 600, 7))  # after retraining on the cohort's labels
    assert not own.drifted and own.drift_share < cfg.drift_share  # the recovery
