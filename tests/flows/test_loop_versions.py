"""Which registered version is the loop's retraining: only one made after the
loop began. On gapminder, a second manual `edgeloop run` left v2 gated but not
promoted; `edgeloop loop` then detected drift and stopped at once with "v2
retrained and passed the gates, but not promoted", before its own retraining
had started. On a real MLflow registry (SQLite); the fleet is not reached."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from scenarios.loop import ClosedLoop, newest_version
from stack.contracts import Tag
from tests.conftest import tiny_params


def test_a_version_from_before_the_loop_is_not_its_retraining(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    name = "it-versions"
    assert newest_version(uri, name) == 0
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=str(tmp_path))
    client.set_model_version_tag(name, "2", Tag.GATE, "passed")
    client.set_model_version_tag(name, "2", Tag.PROMOTION, "not promoted: below v1")
    assert newest_version(uri, name) == 2

    params = tiny_params(registry={"model_name": name})
    began = ClosedLoop(
        None, tmp_path, params, None, [], "north", None, "1", print, newest=2
    )
    assert not began.stopped_early(client)  # (the fleet is not asked: None here)
    assert began.report.outcome == ""


@pytest.mark.integration  # a Prefect server
def test_a_retraining_that_failed_ends_the_wait_and_says_why(tmp_path, prefect_harness):
    """CI, at 8bb5b13: the keyword loop waited its 420 s for a champion and said
    only "no new champion"; a retraining run that failed now ends the wait at
    once, and the report names the run, its state and its message."""
    from datetime import UTC, datetime

    from prefect import flow

    @flow(name="training_pipeline")
    def failing() -> None:
        raise RuntimeError("data/raw/kws.parquet: no rows")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    name = "it-retraining"
    client.create_registered_model(name)
    client.create_model_version(name, source=str(tmp_path))
    params = tiny_params(registry={"model_name": name})
    loop = ClosedLoop(None, tmp_path, params, None, [], "north", None, "1", print)
    loop.newest = 1
    loop.detected_at = datetime.now(UTC)
    assert not loop.stopped_early(client)  # nothing started yet: keep waiting
    assert loop.retraining_said() == "no retraining run started"
    state = failing(return_state=True)
    assert state.is_failed()
    assert loop.stopped_early(client)
    assert loop.report.outcome.startswith("retraining ended without a new version")
    assert "Failed" in loop.report.outcome and "no rows" in loop.report.outcome
