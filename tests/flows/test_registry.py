"""Gates, aliases, alias history, promotion and rollback against a real MLflow
server: versions are real registered versions of real runs."""

from __future__ import annotations

from datetime import datetime

import pytest
from mlflow import MlflowClient

from components.config import GatesConfig, RegistryConfig
from flows.adapters import registry
from stack.contracts import Tag
from stack.rollback_order import check_downgrade
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
    assert "registry.gates.min_test_accuracy: 0.9000 < 0.95" in tags[Tag.GATE_FAILURES]
    assert registry.alias_version(client, name, "champion") == v1  # unchanged, kept
    with pytest.raises(registry.PromotionError, match="did not pass the gates"):
        registry.promote(client, name, v2, "try anyway")
    # The same settings: the cached decision. Another limit: judged again (the old
    # limit was repeated before, whatever params said).
    assert not registry.apply_gates(client, name, v2, auto, key=KEY).passed
    lowered = auto.model_copy(
        update={
            "gates": GatesConfig(min_test_accuracy=0.85, max_drop_vs_champion=0.1),
            "promotion": "manual",
        }
    )
    assert registry.apply_gates(client, name, v2, lowered, key=KEY).passed
    assert client.get_model_version(name, v2).tags[Tag.GATE] == "passed"
    assert registry.alias_version(client, name, "challenger") == v2
    again = registry.apply_gates(client, name, v2, auto, key=KEY)
    assert "registry.gates.min_test_accuracy: 0.9000 < 0.95" in again.failures
    assert client.get_model_version(name, v2).tags[Tag.GATE] == "failed"

    assert (
        client.get_model_version(name, v2)
        .tags[Tag.PROMOTION]
        .startswith(
            "waits for a person (registry.promotion: manual), test accuracy 0.9000 "
            "against champion v1's 0.9700"
        )
    )
    v3 = register_measured_version(client, name, 0.98)
    assert registry.apply_gates(client, name, v3, auto, key=KEY).beats_champion
    assert registry.alias_version(client, name, "champion") == v3
    changes = registry.history(client, name)
    assert [(c.alias, c.from_version, c.to_version) for c in changes] == [
        ("challenger", None, v1),
        ("champion", None, v1),
        ("challenger", v1, v2),  # passed under the lowered limit
        ("challenger", v2, v3),
        ("champion", v1, v3),
    ]
    assert registry.alias_at(changes, "champion", between) == v1

    # A downgrade is a rollback: promote refuses it and says how.
    with pytest.raises(registry.PromotionError, match="older than champion") as told:
        registry.promote(client, name, v1, "back to v1")
    assert f"edgeloop rollback --to {v1}" in str(told.value.hint)
    back = registry.rollback(client, name, "canary regressed", key=KEY, who="ops")
    assert (back.from_version, back.to_version, back.who) == (v3, v1, "ops")
    assert registry.alias_version(client, name, "champion") == v1
    # The signed order on v1 says who and why, and opens serving's and the
    # fleet's doors to it while v3 (or an older version) runs.
    order = check_downgrade(
        client.get_model_version(name, v1).tags[Tag.ROLLBACK_ORDER],
        KEY,
        model=name,
        version=v1,
        running=v3,
    )
    assert order is not None and (order.who, order.replaces) == ("ops", v3)
    assert order.why == "canary regressed"

    manual = auto.model_copy(update={"promotion": "manual"})
    v4 = register_measured_version(client, name, 0.99)
    assert registry.apply_gates(client, name, v4, manual, key=KEY).passed
    assert registry.alias_version(client, name, "challenger") == v4
    assert registry.alias_version(client, name, "champion") == v1
    change = registry.promote(client, name, v4, "reviewed in the UI", who="ds")
    assert (change.from_version, change.to_version) == (v1, v4)
    assert registry.history(client, name)[-1].why == "reviewed in the UI"


def test_why_a_version_that_passed_became_champion_or_did_not(mlflow_stack):
    """The `edgeloop.promotion` tag: the loop's report says why a retrained
    version that passed is not on the fleet (before, it waited out its time)."""
    client, name = MlflowClient(mlflow_stack.tracking_uri), "it-promotion"
    auto = RegistryConfig(
        model_name=name,
        gates=GatesConfig(min_test_accuracy=0.9, max_drop_vs_champion=0.1),
    )
    v1 = register_measured_version(client, name, 0.97)
    assert registry.apply_gates(client, name, v1, auto, key=KEY).passed
    assert client.get_model_version(name, v1).tags[Tag.PROMOTION] == (
        "auto: champion, the first version to pass the gates"
    )
    v2 = register_measured_version(client, name, 0.96)
    decision = registry.apply_gates(client, name, v2, auto, key=KEY)
    assert decision.passed and not decision.beats_champion
    assert client.get_model_version(name, v2).tags[Tag.PROMOTION] == (
        "not promoted: test accuracy 0.9600 against champion v1's 0.9700 on the "
        "same test rows, below it (auto promotes a version at least as accurate); "
        f"a person may: `edgeloop promote {v2}`"
    )
    assert registry.alias_version(client, name, "champion") == v1
    manual = auto.model_copy(update={"promotion": "manual"})
    v3 = register_measured_version(client, name, 0.99)
    assert registry.apply_gates(client, name, v3, manual, key=KEY).passed
    assert client.get_model_version(name, v3).tags[Tag.PROMOTION] == (
        "waits for a person (registry.promotion: manual), test accuracy 0.9900 "
        f"against champion v1's 0.9700 on the same test rows: `edgeloop promote "
        f"{v3}` or the MLflow UI"
    )
    v4 = register_measured_version(client, name, 0.98)
    assert registry.apply_gates(client, name, v4, auto, key=KEY).beats_champion
    assert client.get_model_version(name, v4).tags[Tag.PROMOTION] == (
        "auto: champion, test accuracy 0.9800 against champion v1's 0.9700 on the "
        "same test rows"
    )
