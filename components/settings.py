"""Service URLs, ports and folders: one settings object, EDGELOOP_* env overrides."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGELOOP_", extra="forbid")

    host: str = "127.0.0.1"
    mlflow_port: int = Field(5000, ge=1, le=65535)
    prefect_port: int = Field(4200, ge=1, le=65535)
    webhook_port: int = Field(5055, ge=1, le=65535)
    serving_port: int = Field(3000, ge=1, le=65535)
    fleet_port: int = Field(8300, ge=1, le=65535)
    evidently_port: int = Field(8000, ge=1, le=65535)
    worker_port: int = Field(8081, ge=1, le=65535)  # the Prefect worker's health
    # The fleet server's database: SQLite in the state folder unless set (PostgreSQL:
    # postgresql+psycopg://user:pass@host/db).
    fleet_database_url: str | None = None
    state_dir: Path = Path(".edgeloop")
    # Point at servers you run elsewhere instead of the ones `edgeloop up` starts.
    mlflow_tracking_uri: str | None = None
    prefect_api_url: str | None = None
    startup_timeout_s: float = Field(90.0, gt=0)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self.webhook_port}/mlflow/webhook"

    @property
    def serving_url(self) -> str:
        return f"http://{self.host}:{self.serving_port}"

    @property
    def fleet_url(self) -> str:
        return f"http://{self.host}:{self.fleet_port}"

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
