"""The `release` flow: what follows an alias change in the registry. It records the
change in the alias history when it came from outside the stack (the MLflow UI),
states what is to be released (the version, its shipped variant and the device
profiles it may go to), and tells the running BentoML service to re-read its alias,
so a promotion reaches serving at once rather than at its next poll; a new champion
goes to the edge fleet through the `edge_release` flow, if it is still champion when
that release's turn comes.

Run as a module, it is the stack's webhook service: the registry's webhook receiver
(stack/webhook_receiver.py) starting this flow for each new alias change.

    python -m flows.release --host 127.0.0.1 --port 5055 --state-dir DIR \
        --tracking-uri URL [--serving-url URL] [--fleet-url URL]
(the secret comes from EDGELOOP_WEBHOOK_SECRET; `edgeloop up` starts it)"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import uvicorn
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task

from flows.adapters import registry
from flows.edge_release import edge_release
from stack.contracts import Alias, Tag
from stack.settings import get_settings
from stack.webhook_receiver import AliasEvent, DeliveryLog, create_app


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
    if answer.status_code == 409:  # a version serving will not load: no retry
        return f"refused: {answer.text[:300]}"
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
    # Only while `version` is still champion: a delivery retried for an older
    # champion after a newer one was set ships nothing (edge_release serializes).
    release = edge_release(tracking_uri, name, version, fleet_url, alias=Alias.CHAMPION)
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
    # Serving's step failing (after its retries) does not keep the version from
    # the fleet, whose release checks the seal itself: said in the plan instead.
    refreshed = refresh_serving(serving_url, return_state=True)
    serving = (
        refreshed.result()
        if refreshed.is_completed()
        else f"failed: {str(refreshed.result(raise_on_failure=False))[:300]}"
    )
    fleet = "not configured"
    if alias == Alias.CHAMPION and fleet_url is not None:
        fleet = release_to_fleet(tracking_uri, name, version, fleet_url)
    profiles = tags.get(Tag.DEPLOYABLE_PROFILES, "none")
    plan = ReleasePlan(
        model=name,
        alias=alias,
        version=str(version),
        recorded=recorded,
        ship_variant=tags.get(Tag.SHIP_VARIANT),
        deployable_profiles=[] if profiles == "none" else profiles.split(","),
        gate=tags.get(Tag.GATE),
        serving=serving,
        fleet=fleet,
    )
    get_run_logger().info("release: %s", plan)
    return plan


def release_alias_change(
    event: AliasEvent,
    *,
    tracking_uri: str,
    serving_url: str | None,
    fleet_url: str | None,
) -> ReleasePlan:
    """What the webhook receiver runs for a new alias change."""
    return release(
        tracking_uri=tracking_uri,
        name=event.name,
        alias=event.alias,
        version=str(event.version),
        serving_url=serving_url,
        fleet_url=fleet_url,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--serving-url", help="the BentoML service to refresh")
    parser.add_argument("--fleet-url", help="the fleet server a champion goes to")
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="where the delivery ids taken recently are kept (deliveries/)",
    )
    args = parser.parse_args()
    secret = get_settings().webhook_secret
    if secret is None:
        parser.error("EDGELOOP_WEBHOOK_SECRET is not set")
    on_alias_change = partial(
        release_alias_change,
        tracking_uri=args.tracking_uri,
        serving_url=args.serving_url,
        fleet_url=args.fleet_url,
    )
    uvicorn.run(
        create_app(
            secret.get_secret_value(),
            on_alias_change,
            deliveries=DeliveryLog(args.state_dir / "deliveries"),
        ),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
