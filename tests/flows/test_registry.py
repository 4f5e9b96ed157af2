"""Gates, aliases, alias history, promotion and rollback against a real MLflow
server: versions are real registered versions of real runs."""

from __future__ import annotations

from datetime import datetime

import pytest
from mlflow import MlflowClient

from components.config import GatesConfig, RegistryConfig
from flows.adapters import registry
from tests.conftest import register_measured_version

pytestmark = [pytest.mark.integration]

KEY = b"test gate key"


def test_gates_aliases_history_promotion_and_rollback(mlflow_stack):
    client, name = MlflowClient(mlflow_stack.tracking_uri), "it-registry"
    auto = RegistryConfig(
        model_name=name, gates=GatesConfig(min_test_accuracy=0.95), promotion="auto"
    )

    v1 = register_measured_version(client, name, 0.97)
    assert registry.apply_gates(client, name, v1, auto, key=KEY).passed
    assert registry.alias_version(client, name, "champion") == v1
    assert registry.alias_version(client, name, "challenger") == v1
    between = datetime.now().astimezone()

    v2 = register_measured_version(client, name, 0.90)
    decision = registry.apply_gates(client, name, v2, auto, key=KEY)
    assert not decision.passed
    tags = client.get_model_version(name, v2).tags
    assert tags["edgeloop.gate"] == "failed"
    assert "min_test_accuracy" in tags["edgeloop.gate_failures"]
    assert registry.alias_version(client, name, "champion") == v1  # unchanged, kept
    with pytest.raises(registry.PromotionError, match="did not pass the gates"):
        registry.promote(client, name, v2, "try anyway")

    v3 = register_measured_version(client, name, 0.98)
    assert registry.apply_gates(client, name, v3, auto, key=KEY).beats_champion
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
    v4 = register_measured_version(client, name, 0.99)
    assert registry.apply_gates(client, name, v4, manual, key=KEY).passed
    assert registry.alias_version(client, name, "challenger") == v4
    assert registry.alias_version(client, name, "champion") == v1
    change = registry.promote(client, name, v4, "reviewed in the UI", who="ds")
    assert (change.from_version, change.to_version) == (v1, v4)
    assert registry.history(client, name)[-1].why == "reviewed in the UI"
