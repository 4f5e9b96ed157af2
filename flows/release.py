"""The `release` flow: what follows an alias change in the registry. It records the
change in the alias history when it came from outside the stack (the MLflow UI),
states what is to be released (the version, its shipped variant and the device
profiles it may go to), and tells the running BentoML service to re-read its alias,
so a promotion reaches serving at once rather than at its next poll; a new champion
goes to the edge fleet through the `edge_release` flow, if it is still champion when
that release's turn comes."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task

from flows import registry
from flows.registry import CHAMPION


@dataclass(frozen=True)
class ReleasePlan:
    model: str
    alias: str
    version: str
    recorded: bool
    ship_variant: str | None
    deployable_profiles: list[str]
    gate: str | None
    serving: str
    fleet: str


@task(retries=2, retry_delay_seconds=2)
def record(tracking_uri: str, name: str, alias: str, version: str, who: str) -> bool:
    change = registry.record_external_change(
        MlflowClient(tracking_uri), name, alias, version, who
    )
    return change is not None


@task(retries=2, retry_delay_seconds=2)
def describe(tracking_uri: str, name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient(tracking_uri).get_model_version(name, version).tags)


@task(retries=2, retry_delay_seconds=1)
def refresh_serving(serving_url: str | None) -> str:
    """Ask the service to switch now; a service that is not running needs nothing
    (it loads the alias' version when it starts)."""
    if serving_url is None:
        return "not configured"
    try:
        answer = httpx.post(f"{serving_url}/refresh", json={}, timeout=60)
    except httpx.ConnectError:
        return f"not running at {serving_url}"
    answer.raise_for_status()
    body = answer.json()
    return f"v{body['model_version']} (was v{body['previous_version']})"


def release_to_fleet(tracking_uri: str, name: str, version: str, fleet_url: str) -> str:
    """Start the edge_release subflow; a fleet server that is not running is noted,
    not an error (the next `edgeloop fleet simulate` or release picks it up)."""
    try:
        httpx.get(f"{fleet_url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError:
        return f"not running at {fleet_url}"
    from flows.edge_release import edge_release

    # Only while `version` is still champion: a delivery retried for an older
    # champion after a newer one was set ships nothing (edge_release serializes).
    release = edge_release(tracking_uri, name, version, fleet_url, alias=CHAMPION)
    return f"{release.outcome}: {release.detail}"


@flow(name="release")
def release(
    tracking_uri: str,
    name: str,
    alias: str,
    version: str,
    who: str = "registry (webhook)",
    *,
    serving_url: str | None = None,
    fleet_url: str | None = None,
) -> ReleasePlan:
    recorded = record(tracking_uri, name, alias, version, who)
    tags = describe(tracking_uri, name, version)
    serving = refresh_serving(serving_url)
    fleet = "not configured"
    if alias == CHAMPION and fleet_url is not None:
        fleet = release_to_fleet(tracking_uri, name, version, fleet_url)
    profiles = tags.get("edgeloop.deployable_profiles", "none")
    plan = ReleasePlan(
        model=name,
        alias=alias,
        version=str(version),
        recorded=recorded,
        ship_variant=tags.get("edgeloop.ship_variant"),
        deployable_profiles=[] if profiles == "none" else profiles.split(","),
        gate=tags.get("edgeloop.gate"),
        serving=serving,
        fleet=fleet,
    )
    get_run_logger().info("release: %s", plan)
    return plan
