"""The one settings object: service URLs, ports, folders, databases and secrets,
each overridable by an environment variable (EDGELOOP_<FIELD>, or the name the
production install already uses); nothing else in the stack reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGELOOP_", extra="forbid", populate_by_name=True
    )

    host: str = "127.0.0.1"
    mlflow_port: int = Field(5000, ge=1, le=65535)
    prefect_port: int = Field(4200, ge=1, le=65535)
    webhook_port: int = Field(5055, ge=1, le=65535)
    serving_port: int = Field(3000, ge=1, le=65535)
    fleet_port: int = Field(8300, ge=1, le=65535)
    evidently_port: int = Field(8000, ge=1, le=65535)
    worker_port: int = Field(8081, ge=1, le=65535)  # the Prefect worker's health
    # The databases of the three servers `edgeloop up` starts: SQLite in the state
    # folder unless set. PostgreSQL, one setting each (docs/tutorials/production.md):
    #   mlflow_backend_store_uri  postgresql+psycopg://user:pass@host:5432/mlflow
    #   prefect_database_url      postgresql+asyncpg://user:pass@host:5432/prefect
    #   fleet_database_url        postgresql+psycopg://user:pass@host:5432/fleet
    # Passed to each server in its environment, never on its command line.
    mlflow_backend_store_uri: str | None = None
    prefect_database_url: str | None = None
    fleet_database_url: str | None = None
    state_dir: Path = Path(".edgeloop")
    # The parallel parts of the flows (flows/runners.py): task_workers threads, or
    # Dask (a local cluster of task_workers processes, or the scheduler at
    # dask_address).
    task_runner: Literal["threads", "dask"] = "threads"
    task_workers: int = Field(2, ge=1, le=256)
    dask_address: str | None = None
    # Point at servers you run elsewhere instead of the ones `edgeloop up` starts.
    mlflow_tracking_uri: str | None = None
    prefect_api_url: str | None = None
    # How the other services reach these, when not at host:port (a compose network:
    # http://webhook:5055, http://serving:3000, http://fleet:8300).
    webhook_public_url: str | None = None
    serving_public_url: str | None = None
    fleet_public_url: str | None = None
    startup_timeout_s: float = Field(90.0, gt=0)
    # The params file a service reads (serving, a device agent), when not the
    # working folder's.
    params: Path = Path("params.yaml")
    # Secrets: given here (a compose install's `.env`), else made once per state
    # folder by `stack.secrets` (secrets.json, mode 600).
    webhook_secret: SecretStr | None = None
    mlflow_webhook_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "EDGELOOP_MLFLOW_WEBHOOK_KEY"
        ),
    )
    fleet_admin_token: SecretStr | None = None
    # MLflow's authentication app (`mlflow server --app-name basic-auth`): its admin
    # (made by the server on first start) and the stack's service user (made by
    # `edgeloop up`), whose credentials every client of the stack uses; the key
    # that signs its login forms; where it keeps its users (SQLite beside MLflow's
    # own database, MLflow's backend store, unless set).
    mlflow_admin_user: str = "admin"
    mlflow_admin_password: SecretStr | None = None
    mlflow_service_user: str = "edgeloop"
    mlflow_service_password: SecretStr | None = None
    mlflow_flask_secret_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "MLFLOW_FLASK_SERVER_SECRET_KEY", "EDGELOOP_MLFLOW_FLASK_SECRET_KEY"
        ),
    )
    mlflow_auth_database_uri: str | None = None
    # Prefect's server API authentication: `user:password`, sent by every client.
    prefect_auth_string: SecretStr | None = None
    # The key the gates sign their decision with (stack/gate_seal.py); a release
    # ships only a version whose seal it verifies.
    gate_key: SecretStr | None = None
    # Evidently UI's write API (evidently-secret header); reads need none.
    evidently_secret: SecretStr | None = None

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def webhook_url(self) -> str:
        base = self.webhook_public_url or f"http://{self.host}:{self.webhook_port}"
        return f"{base.rstrip('/')}/mlflow/webhook"

    @property
    def serving_url(self) -> str:
        return self.serving_public_url or f"http://{self.host}:{self.serving_port}"

    @property
    def fleet_url(self) -> str:
        return self.fleet_public_url or f"http://{self.host}:{self.fleet_port}"

    @property
    def evidently_url(self) -> str:
        return f"http://{self.host}:{self.evidently_port}"

    @property
    def prefect_api(self) -> str:
        return self.prefect_api_url or f"http://{self.host}:{self.prefect_port}/api"

    @property
    def prefect_ui(self) -> str:
        return self.prefect_api.removesuffix("/api")


def get_settings() -> Settings:
    return Settings()
