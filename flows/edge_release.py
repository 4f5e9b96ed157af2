"""The `edge_release` flow: a registry version's shipped file goes to the fleet.

It downloads the version's shipped variant (the int8 file the gates judged) from its
MLflow run, uploads it to the fleet server with the device profiles it may run on,
and starts a rollout (canary -> waves -> full, judged by the server's controller).
A rollout of an older champion still in progress is aborted first: the newest
champion wins. With `wait_s`, it waits for the rollout to finish and returns its end
state (completed, or rolled back with the machine-readable cause)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task

from components.errors import ServiceError
from edge_fleet.client import FleetAdmin

ACTIVE = ("running", "paused")


def admin_token() -> str:
    """EDGELOOP_FLEET_ADMIN_TOKEN (set for the services `edgeloop up` starts), else
    the stack's secrets file in the state folder."""
    token = os.environ.get("EDGELOOP_FLEET_ADMIN_TOKEN")
    if token:
        return token
    from components.settings import get_settings

    settings = get_settings()
    path = settings.state_dir / "secrets.json"
    if not path.exists():
        raise ServiceError(
            f"no fleet admin token: EDGELOOP_FLEET_ADMIN_TOKEN is not set and {path} "
            "does not exist",
            hint="start the stack with `edgeloop up`",
        )
    from flows.services import stack_secrets

    return stack_secrets(settings)["fleet_admin_token"]


@task(retries=2, retry_delay_seconds=2)
def fetch_ship_file(tracking_uri: str, name: str, version: str) -> dict:
    client = MlflowClient(tracking_uri)
    model_version = client.get_model_version(name, version)
    tags = model_version.tags
    if "edgeloop.ship_file" not in tags:
        raise ServiceError(
            f"{name} v{version} has no edgeloop.ship_file tag: it was not optimized "
            "by the pipeline, so there is nothing to ship to devices"
        )
    local = mlflow.artifacts.download_artifacts(
        run_id=model_version.run_id,
        artifact_path=tags["edgeloop.ship_file"],
        dst_path=tempfile.mkdtemp(prefix="edgeloop-edge-release-"),
        tracking_uri=tracking_uri,
    )
    profiles = tags.get("edgeloop.deployable_profiles", "none")
    return {
        "file": local,
        "variant": tags.get("edgeloop.ship_variant", "unknown"),
        "profiles": [] if profiles == "none" else profiles.split(","),
        "class_prior": _class_prior(tracking_uri, model_version.run_id),
    }


def _class_prior(tracking_uri: str, run_id: str) -> dict[str, float] | None:
    """The class shares of the training split, from the run's data card."""
    from flows.tracking import data_card

    card = data_card(tracking_uri, run_id) or {}
    counts = card.get("splits", {}).get("train", {}).get("class_distribution")
    if not counts:
        return None
    total = sum(counts.values())
    return {str(k): v / total for k, v in counts.items()}


@task(retries=2, retry_delay_seconds=2)
def upload(fleet_url: str, version: str, shipped: dict) -> dict:
    if not shipped["profiles"]:
        raise ServiceError(
            f"v{version}'s {shipped['variant']} file is deployable to no device "
            "profile (see its edgeloop.deployable_profiles tag)"
        )
    return FleetAdmin(fleet_url, admin_token()).upload(
        version,
        Path(shipped["file"]),
        variant=shipped["variant"],
        profiles=shipped["profiles"],
        class_prior=shipped["class_prior"],
    )


@task
def start(fleet_url: str, version: str, reason: str) -> dict:
    fleet = FleetAdmin(fleet_url, admin_token())
    summary = fleet.summary()
    if summary["channels"].get("channel/stable", {}).get("version") == version:
        return {"state": "already stable", "version": version}
    active = summary["active_rollout"]
    if active is not None:
        if active["version"] == version:
            return active
        fleet.act(active["id"], "abort")  # superseded by the newer champion
    return fleet.start_rollout(version, reason)


@flow(name="edge_release")
def edge_release(
    tracking_uri: str,
    name: str,
    version: str,
    fleet_url: str,
    *,
    reason: str = "champion changed",
    wait_s: float = 0,
) -> dict:
    log = get_run_logger()
    shipped = fetch_ship_file(tracking_uri, name, version)
    model = upload(fleet_url, version, shipped)
    log.info(
        "uploaded v%s (%s, %d bytes) for profiles %s",
        version,
        model["variant"],
        model["size"],
        ",".join(model["profiles"]),
    )
    rollout = start(fleet_url, version, reason)
    log.info("rollout: %s", rollout)
    if wait_s and "id" in rollout:
        fleet = FleetAdmin(fleet_url, admin_token())
        deadline = time.monotonic() + wait_s
        while rollout["state"] in ACTIVE and time.monotonic() < deadline:
            time.sleep(1)
            rollout = fleet.rollout(rollout["id"])
        log.info(
            "rollout %s ended: %s %s", rollout["id"], rollout["state"], rollout["cause"]
        )
    return rollout


def retarget_fleet(
    fleet: FleetAdmin, tracking_uri: str, name: str, version: str, reason: str
) -> dict:
    """Make `version` the fleet's stable version now (for `edgeloop rollback`)."""
    shipped = fetch_ship_file.fn(tracking_uri, name, version)
    fleet.upload(
        version,
        Path(shipped["file"]),
        variant=shipped["variant"],
        profiles=shipped["profiles"],
        class_prior=shipped["class_prior"],
    )
    return fleet.retarget(version, reason)
