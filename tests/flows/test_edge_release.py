"""The edge_release flow against a real MLflow registry, Prefect's test server and a
real fleet server: releases of one model run one at a time, a release of a version
that no longer holds the alias ships nothing, and two concurrent releases of an old
and a new champion (a delivery MLflow retried, and the new one) end with exactly one
rollout, of the new champion, and no other rollout left active."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from edge_fleet.controller import ACTIVE
from flows.adapters import registry
from stack.mlflow_auth import ensure_user
from stack.secrets import gate_key
from stack.settings import Settings
from tests.edge_fleet.conftest import (
    ADMIN,
    FleetServer,
    linear_onnx,
    make_fleet_server,
    running,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "it-release-race"


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FleetServer]:
    """A fleet server whose stages bake for an hour (a rollout stays active), and
    its admin token where edge_release reads it."""
    monkeypatch.setenv("EDGELOOP_FLEET_ADMIN_TOKEN", ADMIN)
    fleet = make_fleet_server(tmp_path, model_name=MODEL, bake_s=3600)
    with running(fleet) as server:
        yield server


def shippable_version(
    client: MlflowClient,
    name: str,
    onnx: Path,
    *,
    sealed: bool = True,
    own_files: dict[str, tuple[str, Path]] | None = None,
) -> str:
    """A run holding an ONNX file as its shipped variant, registered as a version
    with the tags edge_release reads; `own_files`: {profile: (variant, file)} of
    profiles whose measured best is another variant; `sealed`: and the gates'
    seal, as the gates code makes it with the stack's key (this session's)."""
    experiment = client.get_experiment_by_name("release-tests")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("release-tests")
    )
    run = client.create_run(experiment_id)
    client.log_artifact(run.info.run_id, str(onnx), "variants")
    own_files = own_files or {}
    for _, file in own_files.values():
        client.log_artifact(run.info.run_id, str(file), "variants")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/variants", run.info.run_id
    ).version
    for key, value in {
        "edgeloop.ship_file": f"variants/{onnx.name}",
        "edgeloop.ship_variant": "linear",
        "edgeloop.deployable_profiles": "gateway",
        "edgeloop.ship_per_profile": ",".join(
            ["gateway=linear"] + [f"{p}={v}" for p, (v, _) in own_files.items()]
        ),
        "edgeloop.ship_files_per_profile": ",".join(
            [f"gateway=variants/{onnx.name}"]
            + [f"{p}=variants/{f.name}" for p, (_, f) in own_files.items()]
        ),
    }.items():
        client.set_model_version_tag(name, version, key, value)
    if sealed:
        registry.seal_decision(client, name, version, True, gate_key(Settings()))
    return str(version)


def two_versions(
    client: MlflowClient, name: str, folder: Path, seed: int
) -> tuple[str, str]:
    """Two sealed versions of `name`, each a different linear model."""
    folder.mkdir()
    weights = np.random.default_rng(seed).normal(size=(64, 10))
    v1, v2 = (
        shippable_version(
            client, name, linear_onnx(folder / f"m{i}.onnx", weights * i, np.zeros(10))
        )
        for i in (1, 2)
    )
    return v1, v2


def concurrently(*calls) -> list:
    """Run each call in its own thread, released together; their results in order
    (an exception is re-raised)."""
    gate = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def test_concurrent_releases_of_an_old_and_a_new_champion(
    mlflow_uri, prefect_harness, fleet, tmp_path
):
    from prefect.client.orchestration import get_client

    from flows.edge_release import edge_release, release_limit_name

    client, name = MlflowClient(mlflow_uri), MODEL
    v1, v2 = two_versions(client, name, tmp_path / "race", seed=0)

    def release(version: str):
        return lambda: edge_release(
            mlflow_uri, name, version, fleet.url, alias="champion"
        )

    # v1 is champion and goes out; its rollout is still at the canary when v2
    # becomes champion.
    client.set_registered_model_alias(name, "champion", v1)
    first = release(v1)()
    assert first.outcome == "started", first
    client.set_registered_model_alias(name, "champion", v2)

    # A delivery for v1 retried by MLflow, v2's own delivery and its retry: all at
    # once. One release runs at a time; v1 no longer holds champion and ships
    # nothing; v2 supersedes v1's rollout; v2's retry is a no-op.
    retried, new, repeated = concurrently(release(v1), release(v2), release(v2))
    assert retried.outcome == "skipped" and "v2 does" in retried.detail, retried
    assert sorted([new.outcome, repeated.outcome]) == [
        "already_rolling_out",
        "started",
    ]
    rollouts = fleet.admin.rollouts()
    mine = [r for r in rollouts if r["version"] == v2]
    assert len(mine) == 1 and mine[0]["state"] == "running", rollouts
    assert [r["id"] for r in rollouts if r["state"] in ACTIVE] == [mine[0]["id"]]
    [old] = [r for r in rollouts if r["version"] == v1]
    assert old["state"] == "aborted" and old["cause"]["check"] == "superseded", old
    assert fleet.admin.summary()["channels"]["channel/rollout"]["version"] == v2
    # The releases were serialized by the model's Prefect concurrency limit, which
    # holds no slot once they are done.
    with get_client(sync_client=True) as prefect:
        limit = prefect.read_global_concurrency_limit_by_name(release_limit_name(name))
    assert (limit.limit, limit.active_slots) == (1, 0)


def test_only_a_version_the_gates_sealed_ships_and_only_the_file_they_measured(
    mlflow_uri, stack_settings, prefect_harness, fleet, tmp_path
):
    """Tags a data scientist may set through MLflow's REST API (EDIT on the model)
    cannot ship a version: a hand-set gate result, a seal copied from another
    version, a file replaced after the gates measured it. Each is refused with the
    reason in the flow's answer and the alias history; nothing reaches the fleet."""
    from flows.edge_release import edge_release

    client, name = MlflowClient(mlflow_uri), MODEL
    weights = np.random.default_rng(1).normal(size=(64, 10))
    onnx = [
        linear_onnx(tmp_path / f"s{i}.onnx", weights * i, np.zeros(10))
        for i in (3, 4, 5)
    ]
    hand_set = shippable_version(client, name, onnx[0], sealed=False)
    copied = shippable_version(client, name, onnx[1], sealed=False)
    sealed = shippable_version(client, name, onnx[2])
    who = ("ds-release", "ds-password-1234")
    ensure_user(stack_settings, *who, models={name: "EDIT"})
    tags_api = f"{mlflow_uri}/api/2.0/mlflow/model-versions/set-tag"

    def set_tag(version: str, key: str, value: str) -> None:
        change = {"name": name, "version": version, "key": key, "value": value}
        answer = httpx.post(tags_api, json=change, auth=who)
        assert answer.status_code == 200, answer.text

    set_tag(hand_set, "edgeloop.gate", "passed")
    seal = client.get_model_version(name, sealed).tags["edgeloop.gate_seal"]
    set_tag(copied, "edgeloop.gate", "passed")
    set_tag(copied, "edgeloop.gate_seal", seal)
    # The sealed version's file replaced in its run after the gates measured it.
    run_id = client.get_model_version(name, sealed).run_id
    swapped = tmp_path / "swap" / onnx[2].name
    swapped.parent.mkdir()
    swapped.write_bytes(onnx[0].read_bytes())
    client.log_artifact(run_id, str(swapped), "variants")

    answers = {
        version: edge_release(mlflow_uri, name, version, fleet.url)
        for version in (hand_set, copied, sealed)
    }
    assert {v: a.outcome for v, a in answers.items()} == dict.fromkeys(
        answers, "refused"
    )
    assert "no gate seal" in answers[hand_set].detail
    assert f"for {name} v{sealed}" in answers[copied].detail
    assert "changed after the gates ran" in answers[sealed].detail
    refusals = [c for c in registry.history(client, name) if "refused" in c.who]
    assert [(c.to_version, c.why) for c in refusals] == [
        (v, f"not shipped to devices: {a.detail}") for v, a in answers.items()
    ]
    assert fleet.admin.rollouts() == []
    assert fleet.admin.summary()["channels"] == {}


def test_a_profile_whose_best_is_another_variant_ships_that_file_as_sealed(
    mlflow_uri, prefect_harness, fleet, tmp_path
):
    """The gates seal each profile's own file; edge_release uploads it with the
    version and the rollout publishes it as that profile's target. Its file
    replaced in the run after the gates measured it, a version is refused."""
    from flows.edge_release import edge_release

    client, name = MlflowClient(mlflow_uri), MODEL
    weights = np.random.default_rng(2).normal(size=(64, 10))
    made = [
        linear_onnx(tmp_path / f"{kind}-{i}.onnx", weights * i, np.zeros(10))
        for i in (6, 7)
        for kind in ("int8", "fp32")
    ]
    good = shippable_version(
        client, name, made[0], own_files={"cloud": ("fp32", made[1])}
    )
    seal = json.loads(client.get_model_version(name, good).tags["edgeloop.gate_seal"])
    assert seal["per_profile"] == {
        "cloud": {
            "file": "variants/fp32-6.onnx",
            "sha256": hashlib.sha256(made[1].read_bytes()).hexdigest(),
            "variant": "fp32",
        }
    }
    swapped = shippable_version(
        client, name, made[2], own_files={"cloud": ("fp32", made[3])}
    )
    run_id = client.get_model_version(name, swapped).run_id
    other = tmp_path / "swap" / made[3].name
    other.parent.mkdir()
    other.write_bytes(made[1].read_bytes())
    client.log_artifact(run_id, str(other), "variants")

    refused = edge_release(mlflow_uri, name, swapped, fleet.url)
    assert refused.outcome == "refused", refused
    assert "variants/fp32-7.onnx has SHA-256" in refused.detail
    assert fleet.admin.summary()["channels"] == {}

    release = edge_release(mlflow_uri, name, good, fleet.url)
    assert release.outcome == "started", release
    channels = fleet.admin.summary()["channels"]
    assert sorted(channels) == ["channel/rollout", "channel/rollout/cloud"]
    assert channels["channel/rollout"]["filename"] == "int8-6.onnx"
    assert channels["channel/rollout"]["profiles"] == ["gateway"]
    assert channels["channel/rollout/cloud"]["filename"] == "fp32-6.onnx"
    assert channels["channel/rollout/cloud"]["variant"] == "fp32"


def test_an_older_version_ships_only_as_an_explicit_rollback(
    mlflow_uri, prefect_harness, fleet, tmp_path
):
    """Champion set to an older sealed version rolled the whole fleet back to it,
    recorded like any promotion. Now the release refuses it and says how; after
    `edgeloop rollback --to` (a signed order: who, why) the same release ships it."""
    from flows.edge_release import edge_release

    client, name = MlflowClient(mlflow_uri), MODEL
    v1, v2 = two_versions(client, name, tmp_path / "down", seed=2)
    for version in (v1, v2):
        client.set_model_version_tag(name, version, "edgeloop.gate", "passed")
    client.set_registered_model_alias(name, "champion", v2)
    assert edge_release(mlflow_uri, name, v2, fleet.url).outcome == "started"

    client.set_registered_model_alias(name, "champion", v1)  # a quick hand in the UI
    refused = edge_release(mlflow_uri, name, v1, fleet.url, alias="champion")
    assert refused.outcome == "refused", refused
    assert f"v{v1} is older than v{v2}" in refused.detail
    assert f"edgeloop rollback --to {v1}" in refused.detail
    assert [r["version"] for r in fleet.admin.rollouts()] == [v2]

    client.set_registered_model_alias(name, "champion", v2)
    back = registry.rollback(
        client, name, "v2 misreads the north cohort", key=gate_key(Settings()), to=v1
    )
    assert (back.from_version, back.to_version) == (v2, v1)
    shipped = edge_release(mlflow_uri, name, v1, fleet.url, alias="champion")
    assert shipped.outcome == "started", shipped
    rollouts = fleet.admin.rollouts()
    assert [(r["version"], r["state"]) for r in rollouts] == [
        (v1, "running"),
        (v2, "aborted"),
    ]
    last = registry.history(client, name)[-1]
    assert last.why == "rollback: v2 misreads the north cohort" and last.who
