"""Which registered version is the loop's retraining: only one made after the
loop began. On gapminder, a second manual `edgeloop run` left v2 gated but not
promoted; `edgeloop loop` then detected drift and stopped at once with "v2
retrained and passed the gates, but not promoted", before its own retraining
had started. On a real MLflow registry (SQLite); the fleet is not reached."""

from __future__ import annotations

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
