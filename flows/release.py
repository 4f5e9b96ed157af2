"""The `release` flow: what follows an alias change in the registry. It records the
change in the alias history when it came from outside the stack (the MLflow UI),
and, for `champion`, states what is to be released: the version, its shipped
variant and the device profiles it may go to. (Serving and the edge fleet will act
on it: see README.)"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task

from flows import registry


@dataclass(frozen=True)
class ReleasePlan:
    model: str
    alias: str
    version: str
    recorded: bool
    ship_variant: str | None
    deployable_profiles: list[str]
    gate: str | None


@task(retries=2, retry_delay_seconds=2)
def record(tracking_uri: str, name: str, alias: str, version: str, who: str) -> bool:
    change = registry.record_external_change(
        MlflowClient(tracking_uri), name, alias, version, who
    )
    return change is not None


@task(retries=2, retry_delay_seconds=2)
def describe(tracking_uri: str, name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient(tracking_uri).get_model_version(name, version).tags)


@flow(name="release")
def release(
    tracking_uri: str,
    name: str,
    alias: str,
    version: str,
    who: str = "registry (webhook)",
) -> ReleasePlan:
    recorded = record(tracking_uri, name, alias, version, who)
    tags = describe(tracking_uri, name, version)
    profiles = tags.get("edgeloop.deployable_profiles", "none")
    plan = ReleasePlan(
        model=name,
        alias=alias,
        version=str(version),
        recorded=recorded,
        ship_variant=tags.get("edgeloop.ship_variant"),
        deployable_profiles=[] if profiles == "none" else profiles.split(","),
        gate=tags.get("edgeloop.gate"),
    )
    get_run_logger().info("release: %s", plan)
    return plan
