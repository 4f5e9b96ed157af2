"""The stack's secrets: the webhook's HMAC secret, MLflow's key for storing it, the
fleet's admin token, MLflow's admin and service passwords and
its form-signing key, Prefect's API auth string, the gates' signing key. From the
environment where set (a compose install's `.env`), else made once per state folder
(`secrets.json`, mode 600); never in the repository."""

from __future__ import annotations

import json
import secrets

from cryptography.fernet import Fernet

from components.errors import ServiceError
from stack.settings import Settings

# Where each secret comes from when it is given (a compose file's `.env`): the
# settings field and its environment variable.
SECRET_ENV = {
    "webhook_secret": "EDGELOOP_WEBHOOK_SECRET",
    "mlflow_webhook_key": "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
    "fleet_admin_token": "EDGELOOP_FLEET_ADMIN_TOKEN",
    "mlflow_admin_password": "EDGELOOP_MLFLOW_ADMIN_PASSWORD",
    "mlflow_service_password": "EDGELOOP_MLFLOW_SERVICE_PASSWORD",
    "mlflow_flask_secret_key": "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "prefect_auth_string": "EDGELOOP_PREFECT_AUTH_STRING",
    "gate_key": "EDGELOOP_GATE_KEY",
    "evidently_secret": "EDGELOOP_EVIDENTLY_SECRET",
}


def _token() -> str:
    return secrets.token_urlsafe(32)


MAKERS = {
    "webhook_secret": _token,
    "mlflow_webhook_key": lambda: Fernet.generate_key().decode(),
    "fleet_admin_token": _token,
    "mlflow_admin_password": _token,  # MLflow wants at least 12 characters
    "mlflow_service_password": _token,
    "mlflow_flask_secret_key": _token,
    "prefect_auth_string": lambda: f"edgeloop:{_token()}",
    "gate_key": _token,
    "evidently_secret": _token,  # writes to the Evidently UI's API need it
}


def given_secrets(settings: Settings) -> dict[str, str]:
    """The secrets the settings hold (from the environment)."""
    values = {name: getattr(settings, name) for name in SECRET_ENV}
    return {k: v.get_secret_value() for k, v in values.items() if v is not None}


def stack_secrets(settings: Settings) -> dict[str, str]:
    """The secrets of SECRET_ENV: those the settings hold, the rest made once per
    state folder (mode 600); never in the repository."""
    given = given_secrets(settings)
    if len(given) == len(SECRET_ENV):
        return given
    path = settings.state_dir / "secrets.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    missing = {k: make() for k, make in MAKERS.items() if k not in known}
    if missing:  # first start, or secrets a newer version added
        known |= missing
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(known))
    return known | given


def known_secrets(settings: Settings) -> dict[str, str]:
    """The secrets a client of a running stack has: the settings', then those
    `edgeloop up` made in the state folder; none made here."""
    path = settings.state_dir / "secrets.json"
    made = json.loads(path.read_text()) if path.exists() else {}
    return made | given_secrets(settings)


def client_env(settings: Settings) -> dict[str, str]:
    """What a client of the stack's MLflow and Prefect servers authenticates with:
    MLflow's service user (MLflow's client reads MLFLOW_TRACKING_USERNAME and
    _PASSWORD) and Prefect's auth string; empty where the secret is unknown."""
    known = known_secrets(settings)
    env = {}
    if "mlflow_service_password" in known:
        env["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_service_user
        env["MLFLOW_TRACKING_PASSWORD"] = known["mlflow_service_password"]
    if "prefect_auth_string" in known:
        env["PREFECT_API_AUTH_STRING"] = known["prefect_auth_string"]
    return env


def gate_key(settings: Settings) -> bytes:
    """The key the gates sign with and a release verifies with (a client never
    makes one: a seal made with a key nobody else has could never be checked)."""
    key = known_secrets(settings).get("gate_key")
    if key is None:
        raise ServiceError(
            f"no gate key: {SECRET_ENV['gate_key']} is not set and "
            f"{settings.state_dir / 'secrets.json'} does not exist",
            hint="start the stack with `edgeloop up`",
        )
    return key.encode()


def fleet_admin_token(settings: Settings) -> str:
    """The fleet server's admin token for its clients (the release flow, the
    monitor, the CLI): the settings', else the stack's secrets file, which
    `edgeloop up` made (a client never makes a token of its own)."""
    if settings.fleet_admin_token is not None:
        return settings.fleet_admin_token.get_secret_value()
    path = settings.state_dir / "secrets.json"
    if not path.exists():
        raise ServiceError(
            f"no fleet admin token: {SECRET_ENV['fleet_admin_token']} is not set and "
            f"{path} does not exist",
            hint="start the stack with `edgeloop up`",
        )
    return stack_secrets(settings)["fleet_admin_token"]
