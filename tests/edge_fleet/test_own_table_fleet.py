"""A user's own table on a fleet: the penguins model (raw columns in, preprocessing
inside, classes named in the file) rolled out by the real fleet server to real
device agents fed encoded rows with gaps; their reports name species and are
judged by the same drift check `edgeloop drift check` runs on a cohort."""

from __future__ import annotations

import pytest
from palmerpenguins import load_penguins

from components.config import MonitoringConfig
from components.data.features import encode
from monitoring import drift
from tests.components.test_features import SPECIES
from tests.edge_fleet.conftest import Digits, drive, make_agents, rollout_over
from tests.monitoring.test_own_table_drift import penguins_onnx

pytestmark = pytest.mark.integration


def test_a_penguins_cohort_reports_species_and_is_drift_checked(
    fleet_server, http, tmp_path
):
    penguins = load_penguins().drop(columns="year")
    penguins = penguins.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, held = penguins.iloc[:240], penguins.iloc[240:]
    path, encoding = penguins_onnx(train, tmp_path)
    rows = encode(held, encoding)  # sex's gaps travel as NaN
    inputs = Digits(rows, held.species.to_numpy())
    agents = make_agents(fleet_server, inputs, http, 4, home=tmp_path / "devices")
    for agent in agents:
        agent.step()
    shares = train.species.value_counts(normalize=True).to_dict()
    fleet_server.admin.upload(
        "1",
        path,
        model="edgeloop-digits",  # the fleet server's params name this model
        variant="fp32",
        profiles=["gateway"],
        features=rows.shape[1],
        class_prior=shares,
    )
    fleet_server.admin.start_rollout("1", "penguins")
    drive(agents, rollout_over(fleet_server))
    assert fleet_server.admin.rollouts()[0]["state"] == "completed"
    cohort = fleet_server.cfg.cohorts[0]
    drive(
        agents,
        lambda: len(fleet_server.admin.telemetry(cohort, 200)) >= 12,
        max_s=120,
    )
    reports = fleet_server.admin.telemetry(cohort, 200)
    assert all(set(r["class_counts"]) <= set(SPECIES) for r in reports)
    assert any(r["class_counts"] for r in reports)
    reference, current = drift.device_frames(
        train,
        reports,
        batch=fleet_server.cfg.telemetry_batch,
        reference_batches=200,
        label_column="species",
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
    assert result.columns == 2 * rows.shape[1] + len(SPECIES)
