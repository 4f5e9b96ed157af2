"""The edge_release flow against a real MLflow registry, Prefect's test server and a
real fleet server: releases of one model run one at a time, a release of a version
that no longer holds the alias ships nothing, and two concurrent releases of an old
and a new champion (a delivery MLflow retried, and the new one) end with exactly one
rollout, of the new champion, and no other rollout left active."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from edge_fleet.controller import ACTIVE
from tests.edge_fleet.conftest import (
    ADMIN,
    FleetServer,
    linear_onnx,
    make_fleet_server,
    running,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FleetServer]:
    """A fleet server whose stages bake for an hour (a rollout stays active), and
    its admin token where edge_release reads it."""
    monkeypatch.setenv("EDGELOOP_FLEET_ADMIN_TOKEN", ADMIN)
    with running(make_fleet_server(tmp_path, bake_s=3600)) as server:
        yield server


def shippable_version(client: MlflowClient, name: str, onnx: Path) -> str:
    """A run holding an ONNX file as its shipped variant, registered as a version
    with the tags edge_release reads."""
    experiment = client.get_experiment_by_name("release-tests")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("release-tests")
    )
    run = client.create_run(experiment_id)
    client.log_artifact(run.info.run_id, str(onnx), "variants")
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
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return str(version)


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

    client, name = MlflowClient(mlflow_uri), "it-release-race"
    weights = np.random.default_rng(0).normal(size=(64, 10))
    v1, v2 = (
        shippable_version(
            client,
            name,
            linear_onnx(tmp_path / f"m{i}.onnx", weights * i, np.zeros(10)),
        )
        for i in (1, 2)
    )

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
