"""`edgeloop promote | rollback | history`: the registry's aliases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import ParamsOption, console
from cli.fleet import admin
from components.config import load_params
from components.errors import ServiceError
from stack.contracts import Alias
from stack.net import is_healthy
from stack.secrets import gate_key
from stack.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

# The registry's code (MLflow, seconds to import) and the flows' (Prefect, which
# reads its environment when imported: after the root callback set it) are imported
# by the commands that use them, not by every `edgeloop` start.


def registry_client(params_file: Path) -> tuple[MlflowClient, str]:
    """A client of the stack's running MLflow, and the registered model's name."""
    from mlflow import MlflowClient  # see above

    settings = get_settings()
    if not is_healthy(f"{settings.tracking_uri}/health"):
        raise ServiceError(
            f"MLflow at {settings.tracking_uri} is not answering",
            hint="start the services with `edgeloop up`",
        )
    name = load_params(params_file).registry.model_name
    return MlflowClient(settings.tracking_uri), name


def promote(
    version: Annotated[str, typer.Argument(help="the model version to make champion")],
    reason: Annotated[str, typer.Option(help="why, for the alias history")] = "manual",
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Make VERSION the champion (it must have passed the gates)."""
    from flows.adapters.registry import promote as promote_version  # see above

    client, name = registry_client(params_file)
    change = promote_version(client, name, version, reason)
    console.print(
        f"{name}: champion v{change.from_version or '-'} -> "
        f"v{change.to_version} ({change.who}: {change.why})"
    )


def rollback(
    reason: Annotated[str, typer.Option(help="why, for the alias history")] = "manual",
    to: Annotated[
        str | None,
        typer.Option(
            help="the version to roll back to (default: the previous champion)"
        ),
    ] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Move champion back to an older version (the one that held it before, or
    --to), with a rollback order signed with the stack's gate key (serving and the
    fleet ship an older version only with one), and retarget the fleet to it
    (devices holding it in their other slot switch back at once)."""
    from flows.adapters.registry import rollback as rollback_champion  # see above
    from flows.edge_release import retarget_fleet  # see above

    client, name = registry_client(params_file)
    change = rollback_champion(
        client, name, reason, key=gate_key(get_settings()), to=to
    )
    console.print(f"{name}: champion v{change.from_version} -> v{change.to_version}")
    settings = get_settings()
    if not is_healthy(f"{settings.fleet_url}/health"):
        return
    result = retarget_fleet(
        admin(settings),
        settings.tracking_uri,
        name,
        change.to_version,
        f"edgeloop rollback: {reason}",
    )
    stopped = result["rolled_back"]
    console.print(
        f"fleet: stable v{result['stable']}"
        + (
            f"; rollout {stopped['id']} of v{stopped['version']} rolled back"
            if stopped
            else ""
        )
    )


def history(
    at: Annotated[
        str | None, typer.Option(help="ISO time: who was champion then")
    ] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Every alias change of the registered model; with --at, the champion at T."""
    from flows.adapters.registry import alias_at  # see above
    from flows.adapters.registry import history as alias_history  # see above

    client, name = registry_client(params_file)
    changes = alias_history(client, name)
    if at is not None:
        when = datetime.fromisoformat(at)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        holder = alias_at(changes, Alias.CHAMPION, when)
        console.print(
            f"{name}: champion at {when.isoformat()}: "
            + (f"v{holder}" if holder else "none")
        )
        return
    table = Table("when", "alias", "from", "to", "who", "why", title=name)
    for c in changes:
        table.add_row(
            c.when, c.alias, c.from_version or "-", c.to_version, c.who, c.why
        )
    console.print(table)
