"""The `edge_release` flow: a registry version's shipped file goes to the fleet.

It downloads the version's shipped variant (the file the gates judged) from its
MLflow run, and each device profile's own file where that profile's measured best is
another variant (all sealed by the gates), uploads them to the fleet server with the
device profiles they may run on, and starts a rollout (canary -> waves -> full,
judged by the server's controller).

Releases of one registered model run one at a time (a Prefect global concurrency
limit per model, `edgeloop-release-<model>`, held from the alias check to the
rollout's start), and each is idempotent: with `alias`, a version that no longer
holds it by the time its turn comes (a delivery retried for an older champion) is
not shipped; a version already rolling out or stable is a no-op that says so; a
rollout of another version still in progress is superseded by the fleet server in
one step. With `wait_s`, it waits for the rollout to finish and returns its end
state (completed, or rolled back with the machine-readable cause)."""

from __future__ import annotations

import functools
import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import PREFECT_UI_URL

from components.errors import ServiceError
from components.optimization.runtime import load_runtime
from edge_fleet.client import FleetAdmin
from flows.adapters import registry
from flows.adapters.registry import data_card
from flows.retries import transient
from stack.contracts import (
    ACTIVE_ROLLOUT_STATES,
    TAG_PREFIX,
    TRIGGER_PREFIX,
    Alias,
    Channel,
    Tag,
)
from stack.gate_seal import SealError, check_file, verified_seal
from stack.rollback_order import check_downgrade, is_older
from stack.secrets import fleet_admin_token, gate_key
from stack.settings import get_settings

# How long a release waits for another release of the same model to finish.
RELEASE_LOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class FleetRelease:
    """What a release did: `started` a rollout, or a no-op that says why
    (`already_rolling_out`, `already_stable`, `skipped`); `rollout` is the fleet
    server's view of the rollout concerned, at the flow's end."""

    version: str
    outcome: str
    detail: str
    rollout: dict | None = None

    @property
    def state(self) -> str:
        """The rollout's state, or the outcome when there is no rollout."""
        return self.rollout["state"] if self.rollout else self.outcome


def release_limit_name(model: str) -> str:
    """The Prefect global concurrency limit that serializes one model's releases
    (Prefect names may not hold / % & < >)."""
    return "edgeloop-release-" + re.sub(r"[/%&<>]", "_", model)


@contextmanager
def one_release_at_a_time(model: str) -> Iterator[None]:
    """Hold the model's release slot (limit 1; created on first use, so a missing
    limit never means an unlimited one: `strict`)."""
    name = release_limit_name(model)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1)
            )
        except ObjectAlreadyExists:
            pass
    acquired = False
    try:
        with concurrency(name, timeout_seconds=RELEASE_LOCK_TIMEOUT_S, strict=True):
            acquired = True
            yield
    except TimeoutError:
        if acquired:
            raise
        raise ServiceError(
            f"another release of {model} held {name} for over "
            f"{RELEASE_LOCK_TIMEOUT_S} s; this one was not started",
            hint="see the running edge_release flows in the Prefect UI",
        ) from None


def admin_token() -> str:
    """The fleet admin token, from the stack's settings and secrets."""
    return fleet_admin_token(get_settings())


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=transient)
def fetch_ship_file(tracking_uri: str, name: str, version: str) -> dict:
    """The file the gates measured, downloaded, with what the gates' seal says of
    it; SealError when the version holds no seal the stack's key made for it, or
    the file is not the one that was measured."""
    client = MlflowClient(tracking_uri)
    model_version = client.get_model_version(name, version)
    if Tag.SHIP_FILE not in model_version.tags:
        raise ServiceError(
            f"{name} v{version} has no {Tag.SHIP_FILE} tag: it was not optimized "
            "by the pipeline, so there is nothing to ship to devices"
        )
    seal = verified_seal(
        model_version.tags.get(Tag.GATE_SEAL),
        gate_key(get_settings()),
        model=name,
        version=version,
    )

    @functools.cache  # profiles whose best is the same variant: one download
    def download(artifact: str) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=model_version.run_id,
                artifact_path=artifact,
                dst_path=tempfile.mkdtemp(prefix="edgeloop-edge-release-"),
                tracking_uri=tracking_uri,
            )
        )

    local = download(seal.ship_file)
    check_file(seal, local)
    profile_files = {}
    for profile, own in seal.per_profile.items():
        path = download(own["file"])
        check_file(seal, path, profile)
        profile_files[profile] = {"file": str(path), "variant": own["variant"]}
    return {
        "file": str(local),
        "model": name,
        "features": load_runtime(local).features,
        "variant": seal.variant,
        "profiles": [] if seal.profiles == "none" else seal.profiles.split(","),
        "profile_files": profile_files,
        "class_prior": _class_prior(tracking_uri, model_version.run_id),
        "lineage": registry_lineage(client, tracking_uri, model_version),
    }


def registry_lineage(client: MlflowClient, tracking_uri: str, model_version) -> dict:
    """Where the version came from, as the registry says now (the fleet keeps this
    copy for its ledger, edge_fleet/ledger.py): the training run, the gate
    decision and a digest of its seal (verified above), the alias change that made
    it champion, what started the training run (the drift event, its target and
    Evidently snapshot), the Prefect flow run, DVC's hashes of the data."""
    tags = model_version.tags
    name, version = model_version.name, str(model_version.version)
    changes = [
        c
        for c in registry.history(client, name)
        if c.alias == Alias.CHAMPION and c.to_version == version
    ]
    origin = {
        "model": name,
        "version": version,
        "run_id": model_version.run_id,
        "experiment_id": client.get_run(model_version.run_id).info.experiment_id,
        "registered_at": datetime.fromtimestamp(
            model_version.creation_timestamp / 1000, UTC
        ).isoformat(),
        "gate": tags.get(Tag.GATE),
        "seal_sha256": hashlib.sha256(tags[Tag.GATE_SEAL].encode()).hexdigest(),
        "promoted": {
            "who": changes[-1].who,
            "at": changes[-1].when,
            "why": changes[-1].why,
        }
        if changes
        else None,
        "trigger": tags.get(Tag.TRIGGER),
        "drift_target": tags.get(f"{TRIGGER_PREFIX}target"),
        "drift_share": tags.get(f"{TRIGGER_PREFIX}drift_share"),
        "drift_event_id": tags.get(f"{TRIGGER_PREFIX}event_id"),
        "drift_snapshot_id": tags.get(f"{TRIGGER_PREFIX}snapshot_id"),
        "prefect_flow_run_id": tags.get(f"{TAG_PREFIX}prefect_flow_run_id"),
        "raw_data_md5": tags.get(f"{TAG_PREFIX}raw_data_md5"),
        "prepared_data_md5": tags.get(f"{TAG_PREFIX}prepared_data_md5"),
        "git_commit": tags.get(f"{TAG_PREFIX}git_commit"),
        "params_hash": tags.get(f"{TAG_PREFIX}params_hash"),
        "mlflow_url": tracking_uri if tracking_uri.startswith("http") else None,
        "prefect_url": PREFECT_UI_URL.value(),
    }
    return {k: v for k, v in origin.items() if v is not None}


def _class_prior(tracking_uri: str, run_id: str) -> dict[str, float] | None:
    """The class shares of the training split, from the run's data card."""
    card = data_card(tracking_uri, run_id) or {}
    counts = card.get("splits", {}).get("train", {}).get("class_distribution")
    if not counts:
        return None
    total = sum(counts.values())
    return {str(k): v / total for k, v in counts.items()}


@task(retries=2, retry_delay_seconds=2)
def upload(fleet_url: str, version: str, shipped: dict) -> dict:
    if not shipped["profiles"] and not shipped["profile_files"]:
        raise ServiceError(
            f"v{version}'s {shipped['variant']} file is deployable to no device "
            f"profile (see its {Tag.DEPLOYABLE_PROFILES} tag)"
        )
    return upload_files(FleetAdmin(fleet_url, admin_token()), version, shipped)


def upload_files(fleet: FleetAdmin, version: str, shipped: dict) -> dict:
    """The version's file, then each profile's own (its measured best is another
    variant); the fleet server's view of the version."""
    model = fleet.upload(
        version,
        Path(shipped["file"]),
        model=shipped["model"],
        variant=shipped["variant"],
        profiles=shipped["profiles"],
        features=shipped["features"],
        class_prior=shipped["class_prior"],
        lineage=shipped.get("lineage"),
    )
    for profile, own in shipped["profile_files"].items():
        model = fleet.upload_profile_file(
            version, profile, Path(own["file"]), variant=own["variant"]
        )
    return model


@task(retries=2, retry_delay_seconds=2)
def alias_holder(tracking_uri: str, name: str, alias: str) -> str | None:
    """The version holding `alias` now (None when no version does)."""
    client = MlflowClient(tracking_uri)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # No such model, or no such alias; anything else (the server down) raises.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@task
def start(fleet_url: str, version: str, reason: str) -> FleetRelease:
    """One request: the server starts the rollout, superseding another version's
    active one in the same step, or says why nothing was started."""
    answer = FleetAdmin(fleet_url, admin_token()).start_rollout(
        version, reason, supersede=True
    )
    return FleetRelease(version, answer["outcome"], answer["detail"], answer["rollout"])


@flow(name="edge_release")
def edge_release(
    tracking_uri: str,
    name: str,
    version: str,
    fleet_url: str,
    *,
    reason: str = "champion changed",
    wait_s: float = 0,
    alias: str | None = None,
) -> FleetRelease:
    """Ship `version` of `name`; with `alias`, only while it still holds it."""
    log = get_run_logger()
    with one_release_at_a_time(name):
        holder = alias_holder(tracking_uri, name, alias) if alias else version
        if holder != version:
            release = FleetRelease(
                version,
                "skipped",
                f"v{version} no longer holds {alias} (v{holder or '-'} does): "
                "not shipped",
            )
            log.info("%s", release.detail)
            return release
        try:
            shipped = fetch_ship_file(tracking_uri, name, version)
            check_rollback(tracking_uri, name, version, fleet_running(fleet_url))
        except SealError as refused:  # DowngradeRefused included
            return refuse(tracking_uri, name, version, str(refused))
        model = upload(fleet_url, version, shipped)
        log.info(
            "uploaded v%s (%s, %d bytes) for profiles %s%s",
            version,
            model["variant"],
            model["size"],
            ",".join(model["profiles"]) or "-",
            "".join(
                f"; {profile} gets {own['variant']} ({own['size']} bytes)"
                for profile, own in model["profile_files"].items()
            ),
        )
        release = start(fleet_url, version, reason)
    log.info("%s: %s", release.outcome, release.detail)
    rollout = release.rollout
    if wait_s and rollout is not None:
        fleet = FleetAdmin(fleet_url, admin_token())
        deadline = time.monotonic() + wait_s
        while rollout["state"] in ACTIVE_ROLLOUT_STATES and time.monotonic() < deadline:
            time.sleep(1)
            rollout = fleet.rollout(rollout["id"])
        log.info(
            "rollout %s ended: %s %s", rollout["id"], rollout["state"], rollout["cause"]
        )
        release = FleetRelease(version, release.outcome, release.detail, rollout)
    return release


def fleet_running(fleet_url: str) -> str | None:
    """The newest version the fleet runs or is rolling out (None: none yet)."""
    summary = FleetAdmin(fleet_url, admin_token()).summary()
    versions = [
        summary["channels"].get(Channel.STABLE, {}).get("version"),
        (summary.get("active_rollout") or {}).get("version"),
    ]
    newest = None
    for version in (str(v) for v in versions if v is not None):
        if newest is None or is_older(newest, version):
            newest = version
    return newest


def check_rollback(
    tracking_uri: str, name: str, version: str, running: str | None
) -> None:
    """An older version than the fleet runs ships only with a rollback order
    (DowngradeRefused, saying how, otherwise: stack/rollback_order.py)."""
    tags = MlflowClient(tracking_uri).get_model_version(name, version).tags
    check_downgrade(
        tags.get(Tag.ROLLBACK_ORDER),
        gate_key(get_settings()),
        model=name,
        version=version,
        running=running,
    )


def refuse(tracking_uri: str, name: str, version: str, reason: str) -> FleetRelease:
    """A version the gates' seal does not vouch for, or an older one without a
    rollback order, is not shipped: said in this flow's log and in the model's
    alias history."""
    get_run_logger().error("v%s not shipped: %s", version, reason)
    registry.record_change(
        MlflowClient(tracking_uri),
        name,
        Alias.CHAMPION,
        version,
        version,
        who="edgeloop release (refused)",
        why=f"not shipped to devices: {reason}",
    )
    return FleetRelease(version, "refused", reason)


def retarget_fleet(
    fleet: FleetAdmin, tracking_uri: str, name: str, version: str, reason: str
) -> dict:
    """Make `version` the fleet's stable version now (for `edgeloop rollback`)."""
    upload_files(fleet, version, fetch_ship_file.fn(tracking_uri, name, version))
    return fleet.retarget(version, reason)
