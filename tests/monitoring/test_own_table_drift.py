"""A user's own table after serving: what a device reports on the penguins model
(class counts by species name, feature statistics over rows with gaps) is a
report the fleet server takes, and drift is checked on it and on the serving log,
the text columns with Evidently's categorical method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from palmerpenguins import load_penguins

from components.config import MonitoringConfig
from components.config.features import FeaturesConfig
from components.data.features import (
    encode,
    encoding_from_json,
    encoding_to_json,
    fit_encoding,
)
from components.optimization.compress import export_onnx
from components.optimization.runtime import OnnxRuntimeModel, stamp_classes
from components.training.model import ModelSpec, build_model
from edge_fleet.device.inference import feature_stats, predictions
from edge_fleet.server.schemas import TelemetryBatch
from monitoring import drift
from tests.components.test_features import FEATURES, SPECIES, penguin_features

CFG = MonitoringConfig()


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    frame = load_penguins().drop(columns="year")
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def table_onnx(
    frame: pd.DataFrame,
    label: str,
    cfg: FeaturesConfig,
    classes: list[str],
    path: Path,
) -> tuple[Path, list]:
    """A user's table's model as a device gets it: the ONNX file with the fitted
    preprocessing inside and its classes stamped. The network is fitted briefly
    (full-batch Adam on the encoded rows): what is checked here is what travels
    and what devices report, not accuracy, but a device's class counts should
    look like the table's, as a rollout's class-shift check expects."""
    features = [c for c in frame.columns if c != label and c not in cfg.drop]
    encoding = fit_encoding(frame, features, cfg)
    spec = ModelSpec(
        len(features), classes, features, 16, encoding=encoding_to_json(encoding)
    )
    model = build_model(spec)
    x = torch.from_numpy(encode(frame, encoding))
    y = torch.tensor(frame[label].map(classes.index).to_numpy())
    model[0].fit(x)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    path = export_onnx(model.eval(), len(features), path)
    stamp_classes(path, classes, encoding_to_json(encoding))
    return path, encoding


def penguins_onnx(frame: pd.DataFrame, folder: Path) -> tuple[Path, list]:
    """The penguins model as a device gets it (`table_onnx`)."""
    return table_onnx(
        frame, "species", penguin_features(), SPECIES, folder / "penguins.onnx"
    )


@pytest.fixture(scope="module")
def shipped(penguins, tmp_path_factory):
    path, encoding = penguins_onnx(penguins, tmp_path_factory.mktemp("m"))
    return OnnxRuntimeModel(path), encoding


def test_a_device_report_names_species_and_is_finite_with_gaps(penguins, shipped):
    runtime, encoding = shipped
    assert runtime.classes == SPECIES
    gappy = penguins[penguins.sex.isna() & penguins.body_mass_g.notna()]
    x = encode(pd.concat([gappy, penguins.head(64 - len(gappy))]), encoding)
    assert np.isnan(x).any()  # sex's gaps travel as NaN; the model fills them
    body = {
        "version": "1",
        "latency_ms_median": 0.1,
        "latency_ms_p95": 0.2,
        **predictions(runtime.logits(x), runtime.classes),
        "feature_stats": feature_stats(x),
    }
    assert set(body["class_counts"]) <= set(SPECIES) and body["errors"] == 0
    report = TelemetryBatch.model_validate(body)  # what the server checks
    assert report.feature_stats.features == len(FEATURES)
    # A column with no value in the whole batch still reports numbers.
    gaps = x.copy()
    gaps[:, -1] = np.nan
    assert feature_stats(gaps)["mean"][-1] == 0.0


def _reports(
    rows: np.ndarray,
    labels: np.ndarray,
    n: int,
    seed: int,
    inputs: list[dict] | None = None,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pick = rng.integers(0, len(rows), 64)
        counts = pd.Series(labels[pick]).value_counts()
        out.append(
            {"inferences": 64, "class_counts": counts.to_dict()}
            | {"feature_stats": feature_stats(rows[pick], inputs)}
        )
    return out


def _window(train: pd.DataFrame, reports: list[dict], encoding) -> tuple:
    """A cohort's window of 64-row reports against the training rows."""
    return drift.device_frames(
        train,
        reports,
        batch=64,
        reference_batches=200,
        label_column="species",
        encoding=encoding,
    )


def test_a_table_model_reports_category_shares_and_gaps(penguins, shipped):
    """The file names its inputs' kinds (`edgeloop.inputs`), so a device reports
    island's and sex's shares per category and each column's gaps, which the
    fleet server takes; the mean of a category's index said nothing of which
    category moved (Biscoe to Torgersen and Dream to Biscoe cancel out)."""
    runtime, encoding = shipped
    assert runtime.inputs == [
        {"kind": "categorical", "categories": 3},
        *[{"kind": "numeric"}] * 4,
        {"kind": "categorical", "categories": 2},
    ]
    x = encode(penguins.head(64), encoding)
    stats = feature_stats(x, runtime.inputs)
    island = penguins.head(64).island.value_counts(normalize=True)
    assert stats["shares"]["0"] == [
        round(island.get(k, 0.0), 4) for k in ("Biscoe", "Dream", "Torgersen")
    ]
    assert set(stats["shares"]) == {"0", "5"} and len(stats["missing"]) == 6
    assert stats["missing"][5] == round(penguins.head(64).sex.isna().mean(), 4)
    body = {
        "version": "1",
        "latency_ms_median": 0.1,
        "latency_ms_p95": 0.2,
        **predictions(runtime.logits(x), runtime.classes),
        "feature_stats": stats,
    }
    TelemetryBatch.model_validate(body)
    bad = body | {"feature_stats": stats | {"shares": {"9": [1.0]}}}
    with pytest.raises(ValueError, match=r"shares\['9'\]: expected a column"):
        TelemetryBatch.model_validate(bad)


def test_a_category_moving_and_gaps_appearing_drift_by_name(penguins, shipped):
    """Each island's share and sex's gaps are columns of the device window: a
    cohort whose islands move round (each to the next: the index mean barely
    moves) drifts on the islands' shares, one whose sex goes missing on its
    gaps; a quiet one on neither."""
    runtime, encoding = shipped
    # The devices see rows like the training rows: the reference's own
    # population (a 104-row held-out part differs from it by chance already).
    train = penguins.iloc[:240]
    labels = train.species.to_numpy()
    moved = train.assign(
        island=train.island.map(
            {"Biscoe": "Dream", "Dream": "Torgersen", "Torgersen": "Biscoe"}
        )
    )
    gappy = train.assign(sex=train.sex.where(np.arange(len(train)) % 2 == 0))
    results = {}
    for name, frame in (("quiet", train), ("moved", moved), ("gappy", gappy)):
        reports = _reports(
            encode(frame, encoding), labels, 20, seed=3, inputs=runtime.inputs
        )
        reference, current = _window(train, reports, encoding)
        assert "mean_f0" not in current and "cat_f0_0" in reference
        results[name] = drift.check(
            f"cohort-{name}", reference, current, CFG, threshold_scale=8.0, min_rows=5
        )
    assert not results["quiet"].drifted_columns, results["quiet"].summary()
    assert {"cat_f0_0", "cat_f0_1"} <= set(results["moved"].drifted_columns)
    assert "gaps_f5" in results["gappy"].drifted_columns, results["gappy"].summary()


def test_device_windows_of_the_penguins_model(penguins, shipped):
    """The reference is the training rows as the device takes them (encoded), so a
    quiet cohort does not drift and one that sees only Biscoe's birds does."""
    _, encoding = shipped
    train, held = penguins.iloc[:240], penguins.iloc[240:]
    labels = held.species.to_numpy()
    quiet = _reports(encode(held, encoding), labels, 20, seed=1)
    biscoe = held[held.island == "Biscoe"]
    shifted = _reports(encode(biscoe, encoding), biscoe.species.to_numpy(), 20, 2)
    results = {}
    for name, reports in (("quiet", quiet), ("biscoe", shifted)):
        reference, current = _window(train, reports, encoding)
        assert np.isfinite(reference.to_numpy()).all()
        results[name] = drift.check(
            f"cohort-{name}", reference, current, CFG, threshold_scale=8.0, min_rows=5
        )
    assert not results["quiet"].drifted, results["quiet"].summary()
    assert results["biscoe"].drifted, results["biscoe"].summary()
    assert "mean_f0" in results["biscoe"].drifted_columns  # island's index


def test_serving_drift_compares_text_columns_as_categories(penguins):
    """The serving log keeps raw values (text, gaps): island and sex are compared
    with Jensen-Shannon distance, not as numbers (Wasserstein on text fails)."""
    train, held = penguins.iloc[:200], penguins.iloc[200:]

    def log(rows: pd.DataFrame) -> pd.DataFrame:
        frame = rows[FEATURES].copy()
        frame.columns = [f"f{i}" for i in range(len(FEATURES))]
        return frame.assign(label=rows.species.to_numpy(), ts=np.arange(len(rows)))

    reference, current = drift.serving_frames(
        train[[*FEATURES, "species"]], log(held), 500, label_column="species"
    )
    quiet = drift.check("serving", reference, current, CFG, min_rows=50)
    assert not quiet.drifted, quiet.summary()
    dream = held.assign(island="Dream")
    reference, current = drift.serving_frames(
        train[[*FEATURES, "species"]], log(dream), 500, label_column="species"
    )
    moved = drift.check("serving", reference, current, CFG, min_rows=50)
    assert "f0" in moved.drifted_columns, moved.summary()
    assert _method(moved, "f0") == "jensenshannon"  # the categorical method


def _method(result: drift.DriftResult, column: str) -> str:
    assert result.snapshot is not None
    for metric in result.snapshot.dict()["metrics"]:
        if column in str(metric.get("config", {}).get("column", "")):
            return str(metric["config"].get("method"))
    return ""


def test_round_trip_of_the_encoding(shipped):
    _, encoding = shipped
    assert [c.name for c in encoding_from_json(encoding_to_json(encoding))] == FEATURES
