"""The stack's secrets: the webhook's HMAC secret, MLflow's key for storing it, the
fleet's admin token and enrollment key. From the environment where set (a compose
install's `.env`), else made once per state folder (`secrets.json`, mode 600);
never in the repository."""

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
    "fleet_enroll_key": "EDGELOOP_FLEET_ENROLL_KEY",
}


def given_secrets(settings: Settings) -> dict[str, str]:
    """The secrets the settings hold (from the environment)."""
    values = {name: getattr(settings, name) for name in SECRET_ENV}
    return {k: v.get_secret_value() for k, v in values.items() if v is not None}


def stack_secrets(settings: Settings) -> dict[str, str]:
    """The webhook's HMAC secret, MLflow's key for storing it and the fleet's admin
    token and enrollment key: those the settings hold, the rest made once per state
    folder (mode 600); never in the repository."""
    given = given_secrets(settings)
    if len(given) == len(SECRET_ENV):
        return given
    path = settings.state_dir / "secrets.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    makers = {
        "webhook_secret": lambda: secrets.token_urlsafe(32),
        "mlflow_webhook_key": lambda: Fernet.generate_key().decode(),
        "fleet_admin_token": lambda: secrets.token_urlsafe(32),
        "fleet_enroll_key": lambda: secrets.token_urlsafe(32),
    }
    missing = {k: make() for k, make in makers.items() if k not in known}
    if missing:  # first start, or secrets a newer version added
        known |= missing
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(known))
    return known | given


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
