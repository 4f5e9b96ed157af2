"""A user's own table on a fleet: its model (raw columns in, preprocessing inside,
classes named in the file) rolled out by the real fleet server to real device
agents fed encoded rows; their reports name the classes and are judged by the
same drift check `edgeloop drift check` runs on a cohort. On the Palmer penguins
(strings, gaps) and plotly's tips (a Yes/No column, weekday names)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from plotly.data import tips

from components.config import MonitoringConfig
from components.config.features import FeaturesConfig
from components.data.features import encode
from monitoring import drift
from tests.components.test_features import SPECIES, penguin_features
from tests.edge_fleet.conftest import Digits, drive, make_agents, rollout_over
from tests.monitoring.test_own_table_drift import table_onnx

pytestmark = pytest.mark.integration


def _penguins() -> Table:
    frame = load_penguins().drop(columns="year")
    return Table("penguins", frame, "species", penguin_features(), SPECIES)


def _tips() -> Table:
    """plotly's tips: a Yes/No column and weekday names, the meal as label."""
    cfg = FeaturesConfig.model_validate(
        {
            "columns": {
                "sex": {"kind": "categorical", "values": ["Female", "Male"]},
                "smoker": {"kind": "boolean"},
                "day": {"kind": "categorical", "values": ["Fri", "Sat", "Sun", "Thur"]},
            }
        }
    )
    return Table("tips", tips(), "time", cfg, ["Dinner", "Lunch"])


@dataclass(frozen=True)
class Table:
    name: str
    frame: pd.DataFrame
    label: str
    features: FeaturesConfig
    classes: list[str]


@pytest.mark.parametrize("table", [_penguins, _tips], ids=["penguins", "tips"])
def test_a_cohort_on_a_users_table_reports_labels_and_is_drift_checked(
    fleet_server, http, tmp_path, table
):
    table = table()
    frame = table.frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    cut = int(len(frame) * 0.7)
    train, held = frame.iloc[:cut], frame.iloc[cut:]
    path, encoding = table_onnx(
        train, table.label, table.features, table.classes, tmp_path / "m.onnx"
    )
    rows = encode(held, encoding)  # penguins' gaps travel as NaN
    inputs = Digits(rows, held[table.label].to_numpy())
    agents = make_agents(fleet_server, inputs, http, 4, home=tmp_path / "devices")
    for agent in agents:
        agent.step()
    shares = train[table.label].value_counts(normalize=True).to_dict()
    fleet_server.admin.upload(
        "1",
        path,
        model="edgeloop-digits",  # the fleet server's params name this model
        variant="fp32",
        profiles=["gateway"],
        features=rows.shape[1],
        class_prior=shares,
    )
    fleet_server.admin.start_rollout("1", table.name)
    drive(agents, rollout_over(fleet_server))
    assert fleet_server.admin.rollouts()[0]["state"] == "completed"
    cohort = fleet_server.cfg.cohorts[0]
    drive(
        agents,
        lambda: len(fleet_server.admin.telemetry(cohort, 200)) >= 12,
        max_s=120,
    )
    reports = fleet_server.admin.telemetry(cohort, 200)
    assert all(set(r["class_counts"]) <= set(table.classes) for r in reports)
    assert any(r["class_counts"] for r in reports)
    reference, current = drift.device_frames(
        train,
        reports,
        batch=fleet_server.cfg.telemetry_batch,
        reference_batches=200,
        label_column=table.label,
        encoding=encoding,
    )
    result = drift.check(
        f"cohort-{cohort}",
        reference,
        current,
        MonitoringConfig(),
        threshold_scale=fleet_server.cfg.telemetry_batch**0.5,
        min_rows=10,
    )
    assert result.snapshot is not None, result.summary()  # judged, not skipped
    # A number by its mean and spread, a category by each category's share
    # (not its index's mean), each column whose policy fills gaps by its gaps.
    categorical = [c for c in encoding if c.kind == "categorical"]
    assert result.columns == (
        2 * (len(encoding) - len(categorical))
        + sum(len(c.categories or []) for c in categorical)
        + sum(not np.isnan(c.fill) for c in encoding)
        + len(table.classes)
    ), list(current.columns)
    assert categorical and not any(
        f"mean_f{encoding.index(c)}" in current for c in categorical
    )
