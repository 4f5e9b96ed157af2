"""Gates, aliases, alias history, promotion and rollback against a real MLflow
server: versions are real registered versions of real runs."""

from __future__ import annotations

from datetime import datetime

import pytest
from mlflow import MlflowClient

from components.config import GatesConfig, RegistryConfig
from flows import registry

pytestmark = [pytest.mark.integration]


def _version(client: MlflowClient, name: str, accuracy: float) -> str:
    """A run with the measurements the gates read, registered as a new version."""
    experiment = client.get_experiment_by_name("registry-tests")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("registry-tests")
    )
    run = client.create_run(experiment_id)
    for key, value in {
        "test_accuracy": accuracy,
        "variant.int8_static.size_bytes": 55_000.0,
        "variant.int8_static.latency_median_ms": 0.02,
    }.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already there
        pass
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run.info.run_id
    )
    for key, value in {
        "edgeloop.ship_variant": "int8_static",
        "edgeloop.ship_accepted": "true",
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    return str(version.version)


def test_gates_aliases_history_promotion_and_rollback(mlflow_uri):
    client, name = MlflowClient(mlflow_uri), "it-registry"
    auto = RegistryConfig(
        model_name=name, gates=GatesConfig(min_test_accuracy=0.95), promotion="auto"
    )

    v1 = _version(client, name, 0.97)
    assert registry.apply_gates(client, name, v1, auto).passed
    assert registry.alias_version(client, name, "champion") == v1
    assert registry.alias_version(client, name, "challenger") == v1
    between = datetime.now().astimezone()

    v2 = _version(client, name, 0.90)
    decision = registry.apply_gates(client, name, v2, auto)
    assert not decision.passed
    tags = client.get_model_version(name, v2).tags
    assert tags["edgeloop.gate"] == "failed"
    assert "min_test_accuracy" in tags["edgeloop.gate_failures"]
    assert registry.alias_version(client, name, "champion") == v1  # unchanged, kept
    with pytest.raises(registry.PromotionError, match="did not pass the gates"):
        registry.promote(client, name, v2, "try anyway")

    v3 = _version(client, name, 0.98)
    assert registry.apply_gates(client, name, v3, auto).beats_champion
    assert registry.alias_version(client, name, "champion") == v3
    changes = registry.history(client, name)
    assert [(c.alias, c.from_version, c.to_version) for c in changes] == [
        ("challenger", None, v1),
        ("champion", None, v1),
        ("challenger", v1, v3),
        ("champion", v1, v3),
    ]
    assert registry.alias_at(changes, "champion", between) == v1

    back = registry.rollback(client, name, "canary regressed", who="ops")
    assert (back.from_version, back.to_version, back.who) == (v3, v1, "ops")
    assert registry.alias_version(client, name, "champion") == v1

    manual = auto.model_copy(update={"promotion": "manual"})
    v4 = _version(client, name, 0.99)
    assert registry.apply_gates(client, name, v4, manual).passed
    assert registry.alias_version(client, name, "challenger") == v4
    assert registry.alias_version(client, name, "champion") == v1
    change = registry.promote(client, name, v4, "reviewed in the UI", who="ds")
    assert (change.from_version, change.to_version) == (v1, v4)
    assert registry.history(client, name)[-1].why == "reviewed in the UI"
