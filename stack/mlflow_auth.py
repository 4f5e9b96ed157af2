"""MLflow's own authentication app (`mlflow server --app-name basic-auth`) for the
stack: its configuration file, the stack's service user (made by the admin the
server creates on its first start), and the users a team adds (data scientists who
may promote a model in the UI). Users, passwords and permissions live in MLflow's
auth database; the admin and service passwords in the stack's secrets."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import ServiceError
from stack.contracts import EXPERIMENT
from stack.secrets import known_secrets, stack_secrets
from stack.settings import Settings

# Every authenticated user may read every experiment and model; writing needs a
# permission: MANAGE on what a user created, EDIT or MANAGE granted by the admin.
DEFAULT_PERMISSION = "READ"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_AS_USER = threading.Lock()
AUTH_CACHE_TTL_S = 60


def auth_config(settings: Settings) -> Path:
    """The auth app's configuration file (no password in it: the server reads the
    admin's from its environment on first start)."""
    home = (settings.state_dir / "mlflow").resolve()
    home.mkdir(parents=True, exist_ok=True)
    # Its tables beside MLflow's own (it versions them in alembic_version_auth).
    database = (
        settings.mlflow_auth_database_uri
        or settings.mlflow_backend_store_uri
        or f"sqlite:///{home / 'mlflow.db'}"
    )
    path = home / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {database}\n"
        f"admin_username = {settings.mlflow_admin_user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # A password check costs about 0.3 s of CPU (scrypt): without the cache,
        # every request of every client pays it. A changed password or a deleted
        # user reaches the cache at once through MLflow's API on its one worker.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )
    path.chmod(0o600)  # a PostgreSQL URL may hold a password
    return path


def server_env(settings: Settings) -> dict[str, str]:
    """The MLflow server's environment for its auth app."""
    secrets = stack_secrets(settings)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(settings)),
        "MLFLOW_AUTH_ADMIN_USERNAME": settings.mlflow_admin_user,
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets["mlflow_admin_password"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets["mlflow_flask_secret_key"],
    }


@contextmanager
def as_user(username: str, password: str) -> Iterator[None]:
    """MLflow's clients (MlflowClient, AuthServiceClient) read their credentials
    from the environment on each request: these, for the block's duration (one
    block at a time in this process)."""
    with _AS_USER:
        before = {name: os.environ.get(name) for name in CREDENTIALS}
        os.environ.update(zip(CREDENTIALS, (username, password), strict=True))
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextmanager
def as_admin(settings: Settings) -> Iterator[None]:
    password = known_secrets(settings).get("mlflow_admin_password")
    if password is None:
        raise ServiceError(
            "no MLflow admin password: EDGELOOP_MLFLOW_ADMIN_PASSWORD is not set and "
            f"{settings.state_dir / 'secrets.json'} does not exist",
            hint="start the stack with `edgeloop up`",
        )
    with as_user(settings.mlflow_admin_user, password):
        yield


def ensure_user(
    settings: Settings, username: str, password: str, *, models: dict[str, str]
) -> None:
    """Create `username` (or set its password), and grant it a permission on each
    registered model of `models` (name -> READ | EDIT | MANAGE) that exists."""
    from mlflow import MlflowClient  # seconds to import: only where it is used
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    uri = settings.tracking_uri
    with as_admin(settings):
        users = AuthServiceClient(uri)
        try:
            users.get_user(username)
            users.update_user_password(username, password)
        except MlflowException as missing:
            if missing.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            users.create_user(username, password)
        registry = MlflowClient(uri)
        for name, permission in models.items():
            if registry.search_registered_models(f"name = '{name}'"):
                grant(users, username, "registered_model", name, permission)


def grant(users, username: str, kind: str, resource: str, permission: str) -> None:
    """Grant a permission through MLflow's AuthServiceClient; one the user holds
    already on that resource (a creator's MANAGE, an earlier grant) is kept."""
    from mlflow.exceptions import MlflowException

    try:
        users.grant_user_permission(username, kind, resource, permission)
    except MlflowException as exists:
        if exists.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def ensure_service_user(settings: Settings, model_name: str) -> None:
    """The stack's own user: it creates the training experiment and the registered
    model (MLflow gives a creator MANAGE); on a registry that already holds them
    (made before authentication was on) it is granted MANAGE."""
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    password = stack_secrets(settings)["mlflow_service_password"]
    user = settings.mlflow_service_user
    ensure_user(settings, user, password, models={model_name: "MANAGE"})
    with as_admin(settings):
        experiment = MlflowClient(settings.tracking_uri).get_experiment_by_name(
            EXPERIMENT
        )
        if experiment is not None:
            users = AuthServiceClient(settings.tracking_uri)
            grant(users, user, "experiment", experiment.experiment_id, "MANAGE")
