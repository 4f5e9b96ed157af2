"""The local services `edgeloop up` starts, all on loopback: an MLflow server on
SQLite with a local artifact folder and its authentication app, a Prefect server on
SQLite requiring its API auth string, the receiver of
MLflow's registry webhook, the edge fleet server, the Evidently UI, a Prefect worker
for the stack's deployments, and BentoML serving of the champion (once there is
one). Each as a `ServiceSpec` (command, environment, ports, health URL);
`stack.supervisor` runs them under supervisord."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from components.config import load_params
from stack.contracts import WORK_POOL
from stack.mlflow_auth import as_admin
from stack.mlflow_auth import server_env as mlflow_auth_env
from stack.secrets import client_env, known_secrets, stack_secrets
from stack.settings import Settings

# MLflow caches its webhook list per event (default 60 s): a webhook registered or
# updated by `edgeloop up` would miss the alias changes of that time. The local
# stack's registry sees a handful of events an hour: it reads the list each time.
WEBHOOK_CACHE_TTL_S = 0


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    health_url: str
    ui_url: str
    command: list[str]
    env: dict[str, str]
    port_setting: str


def _bin(name: str) -> str:
    """A console script of this environment, found beside the running interpreter."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def mlflow_spec(settings: Settings) -> ServiceSpec:
    home = (settings.state_dir / "mlflow").resolve()
    url = f"http://{settings.host}:{settings.mlflow_port}"
    return ServiceSpec(
        name="mlflow",
        port=settings.mlflow_port,
        health_url=f"{url}/health",
        ui_url=url,
        command=[
            _bin("mlflow"),
            "server",
            "--artifacts-destination",
            str(home / "artifacts"),
            "--host",
            settings.host,
            "--port",
            str(settings.mlflow_port),
            "--workers",
            "1",
            # MLflow's own authentication: every call but /health needs a user.
            "--app-name",
            "basic-auth",
        ],
        env=mlflow_auth_env(settings)
        | {
            # `--backend-store-uri` reads it: a password stays out of `ps`.
            "MLFLOW_BACKEND_STORE_URI": settings.mlflow_backend_store_uri
            or f"sqlite:///{home / 'mlflow.db'}",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            # MLflow's job runner (huey consumers, ~255 MB each) runs MLflow's own
            # server-side jobs (GenAI evaluation, trace rollups): the stack uses none.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # Registry webhooks to the stack's own receiver on loopback, over http.
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            # How long the server caches its webhook list (default 60 s).
            "MLFLOW_WEBHOOK_CACHE_TTL": str(WEBHOOK_CACHE_TTL_S),
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": stack_secrets(settings)[
                "mlflow_webhook_key"
            ],
        },
        port_setting="EDGELOOP_MLFLOW_PORT",
    )


def prefect_env(settings: Settings) -> dict[str, str]:
    """Environment for anything that talks to (or is) the local Prefect server,
    its API auth string included once the stack has one."""
    env = {
        "PREFECT_HOME": str((settings.state_dir / "prefect").resolve()),
        "PREFECT_API_URL": settings.prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": settings.prefect_api,
    }
    auth = known_secrets(settings).get("prefect_auth_string")
    if auth is not None:
        env["PREFECT_API_AUTH_STRING"] = auth
    return env


def stack_client_env(settings: Settings) -> dict[str, str]:
    """A process of the stack that runs flows and talks to MLflow: Prefect's
    environment, MLflow's service user, the fleet's admin token, the gate key."""
    secrets = stack_secrets(settings)
    return (
        prefect_env(settings)
        | client_env(settings)
        | {
            "EDGELOOP_FLEET_ADMIN_TOKEN": secrets["fleet_admin_token"],
            "EDGELOOP_GATE_KEY": secrets["gate_key"],
        }
    )


def use_stack_credentials(settings: Settings) -> None:
    """This process as a client of the stack: Prefect's environment, and MLflow's
    service user unless the caller named a user of their own."""
    os.environ.update(prefect_env(settings))
    for name, value in client_env(settings).items():
        os.environ.setdefault(name, value)


def prefect_spec(settings: Settings) -> ServiceSpec:
    env = prefect_env(settings)
    env.pop("PREFECT_API_URL")
    # Prefect's server API authentication: every route but its health checks.
    env["PREFECT_SERVER_API_AUTH_STRING"] = stack_secrets(settings)[
        "prefect_auth_string"
    ]
    if settings.prefect_database_url:  # Prefect's own setting; SQLite otherwise
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = settings.prefect_database_url
    return ServiceSpec(
        name="prefect",
        port=settings.prefect_port,
        health_url=f"{settings.prefect_api}/health",
        ui_url=settings.prefect_ui,
        command=[
            _bin("prefect"),
            "server",
            "start",
            "--host",
            settings.host,
            "--port",
            str(settings.prefect_port),
        ],
        env=env,
        port_setting="EDGELOOP_PREFECT_PORT",
    )


def webhook_spec(settings: Settings) -> ServiceSpec:
    url = f"http://{settings.host}:{settings.webhook_port}"
    return ServiceSpec(
        name="webhook",
        port=settings.webhook_port,
        health_url=f"{url}/health",
        ui_url=settings.webhook_url,
        command=[
            sys.executable,
            "-m",
            "flows.release",
            "--host",
            settings.host,
            "--port",
            str(settings.webhook_port),
            "--tracking-uri",
            settings.tracking_uri,
            "--serving-url",
            settings.serving_url,
            "--fleet-url",
            settings.fleet_url,
            "--state-dir",
            str((settings.state_dir / "webhook").resolve()),
        ],
        env=stack_client_env(settings)
        | {"EDGELOOP_WEBHOOK_SECRET": stack_secrets(settings)["webhook_secret"]},
        port_setting="EDGELOOP_WEBHOOK_PORT",
    )


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def fleet_env(settings: Settings) -> dict[str, str]:
    keys = stack_secrets(settings)
    return {
        "EDGELOOP_FLEET_ADMIN_TOKEN": keys["fleet_admin_token"],
    }


def fleet_spec(
    settings: Settings, params_file: Path = Path("params.yaml")
) -> ServiceSpec:
    """The fleet server (edge_fleet/server/): devices, rollouts, TUF repository."""
    command = [
        sys.executable,
        "-m",
        "edge_fleet.server",
        "--host",
        settings.host,
        "--port",
        str(settings.fleet_port),
        "--state-dir",
        str((settings.state_dir / "fleet").resolve()),
        "--params",
        str(params_file.resolve()),
    ]
    env = fleet_env(settings)
    if settings.fleet_database_url:  # read by the server; kept out of `ps`
        env["EDGELOOP_FLEET_DATABASE_URL"] = settings.fleet_database_url
    return ServiceSpec(
        name="fleet",
        port=settings.fleet_port,
        health_url=f"{settings.fleet_url}/health",
        ui_url=f"{settings.fleet_url}/ui/",  # the console (its API: /docs)
        command=command,
        env=env,
        port_setting="EDGELOOP_FLEET_PORT",
    )


def serving_spec(
    settings: Settings, params_file: Path = Path("params.yaml")
) -> ServiceSpec:
    """`bentoml serve` of the registry's champion (see serving/service.py)."""
    return ServiceSpec(
        name="serving",
        port=settings.serving_port,
        health_url=f"{settings.serving_url}/readyz",
        ui_url=settings.serving_url,
        command=[
            _bin("bentoml"),
            "serve",
            "serving.service:Predictor",
            "--working-dir",
            str(PROJECT_ROOT),
            "--host",
            settings.host,
            "--port",
            str(settings.serving_port),
        ],
        env=client_env(settings)
        | {
            "EDGELOOP_MLFLOW_TRACKING_URI": settings.tracking_uri,
            "EDGELOOP_PARAMS": str(params_file.resolve()),
            "BENTOML_DO_NOT_TRACK": "true",
            # serving loads only versions the gates sealed (serving/model_source.py)
            "EDGELOOP_GATE_KEY": stack_secrets(settings)["gate_key"],
        },
        port_setting="EDGELOOP_SERVING_PORT",
    )


def evidently_spec(settings: Settings) -> ServiceSpec:
    """`evidently ui` on the workspace the monitor flow writes its snapshots to."""
    return ServiceSpec(
        name="evidently",
        port=settings.evidently_port,
        health_url=f"{settings.evidently_url}/",
        ui_url=settings.evidently_url,
        command=[
            _bin("evidently"),
            "ui",
            "--workspace",
            str(evidently_workspace(settings)),
            "--host",
            settings.host,
            "--port",
            str(settings.evidently_port),
        ],
        # Evidently's token security: reads open (the dashboards, on loopback),
        # writes (create, change or delete a project or dashboard) only with the
        # `evidently-secret` header; the monitor writes its workspace directly.
        env={
            "DO_NOT_TRACK": "1",
            "EVIDENTLY_SECRET": stack_secrets(settings)["evidently_secret"],
        },
        port_setting="EDGELOOP_EVIDENTLY_PORT",
    )


def worker_spec(settings: Settings) -> ServiceSpec:
    """A Prefect worker on the `edgeloop` process pool: runs the deployments."""
    url = f"http://{settings.host}:{settings.worker_port}"
    return ServiceSpec(
        name="worker",
        port=settings.worker_port,
        health_url=f"{url}/health",
        ui_url=f"{settings.prefect_ui}/work-pools/work-pool/{WORK_POOL}",
        command=[
            _bin("prefect"),
            "worker",
            "start",
            "--pool",
            WORK_POOL,
            "--type",
            "process",
            "--with-healthcheck",
        ],
        env=stack_client_env(settings)
        | fleet_env(settings)
        | {
            "PREFECT_WORKER_WEBSERVER_HOST": settings.host,
            "PREFECT_WORKER_WEBSERVER_PORT": str(settings.worker_port),
            # The retraining it runs shares the cores with serving and the fleet
            # (the loop's simulated devices): OpenMP threads that spin at each
            # barrier while the other is descheduled made the keyword spotter's
            # training 5x slower beside one busy process (3 epochs: 79 s; passive
            # 17 s; 14 s against 11 s on idle cores).
            "OMP_WAIT_POLICY": "PASSIVE",
        },
        port_setting="EDGELOOP_WORKER_PORT",
    )


def evidently_workspace(settings: Settings) -> Path:
    path = (settings.state_dir / "evidently").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def champion_version(settings: Settings, params_file: Path) -> str | None:
    """The version serving would load, or None while the registry has no champion."""
    from mlflow import MlflowClient  # seconds to import: only where it is used
    from mlflow.exceptions import MlflowException

    params = load_params(params_file)
    try:
        return (
            MlflowClient(settings.tracking_uri)
            .get_model_version_by_alias(
                params.registry.model_name, params.serving.alias
            )
            .version
        )
    except MlflowException:
        return None


def ensure_webhook(settings: Settings) -> str:
    """Register the receiver with MLflow for alias changes (once; the secret is
    refreshed if the webhook already exists). MLflow lets only its admin manage
    webhooks."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    secret = stack_secrets(settings)["webhook_secret"]
    with as_admin(settings):
        return _ensure_webhook(client, settings, secret)


def _ensure_webhook(client, settings: Settings, secret: str) -> str:
    for hook in client.list_webhooks():
        if hook.url == settings.webhook_url:
            client.update_webhook(hook.webhook_id, secret=secret)
            return hook.webhook_id
    hook = client.create_webhook(
        name="edgeloop-release",
        url=settings.webhook_url,
        events=["model_version_alias.created"],
        secret=secret,
        description="alias changes start edgeloop's release flow",
    )
    return hook.webhook_id


def local_services(
    settings: Settings, params_file: Path = Path("params.yaml")
) -> list[ServiceSpec]:
    """What `edgeloop up` runs: MLflow and Prefect unless the settings name servers
    elsewhere, then the stack's own services."""
    specs = []
    if settings.mlflow_tracking_uri is None:
        specs.append(mlflow_spec(settings))
    if settings.prefect_api_url is None:
        specs.append(prefect_spec(settings))
    specs.append(webhook_spec(settings))
    specs.append(fleet_spec(settings, params_file))
    specs.append(evidently_spec(settings))
    specs.append(worker_spec(settings))
    specs.append(serving_spec(settings, params_file))
    return specs


def log_file(settings: Settings, name: str) -> Path:
    return (settings.state_dir / "logs" / f"{name}.log").resolve()
