"""`edgeloop state backup | verify | restore`: the state folder, copied whole and
checked (stack/backup.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.console import console
from stack.backup import backup as make_backup
from stack.backup import restore as restore_backup
from stack.backup import verify as verify_backup
from stack.settings import get_settings

state_app = typer.Typer(
    no_args_is_help=True, help="back up and restore the state folder (.edgeloop/)"
)
Folder = Annotated[Path, typer.Argument(help="the backup's folder")]


def _external(names: list[str]) -> None:
    for name in names:
        console.print(
            f"not in this backup: the database of {name} (PostgreSQL): back it up "
            "with pg_dump at the same time"
        )


@state_app.command()
def backup(dest: Folder) -> None:
    """Copy the state folder into a new folder, with a manifest of every file's
    SHA-256 (SQLite databases through SQLite's online backup: safe while the stack
    runs). The copy holds the secrets and keys: keep it as safe as the original."""
    manifest = make_backup(get_settings(), dest)
    size = sum(entry.get("size", 0) for entry in manifest.files.values())
    console.print(
        f"backed up {len(manifest.files)} files ({size / 1e6:.1f} MB) to {dest}"
    )
    _external(manifest.external)


@state_app.command()
def verify(source: Folder) -> None:
    """Check a backup against its manifest: every file there, none added, each
    with its digest."""
    manifest = verify_backup(source)
    console.print(
        f"{source}: {len(manifest.files)} files as backed up at {manifest.created}"
    )


@state_app.command()
def restore(
    source: Folder,
    force: Annotated[
        bool,
        typer.Option(help="move an existing state folder aside and restore anyway"),
    ] = False,
) -> None:
    """Put a verified backup in place of the state folder, with the stack stopped.
    An existing state folder is refused, or with --force moved aside, never
    deleted."""
    settings = get_settings()
    moved = restore_backup(settings, source, force=force)
    if moved is not None:
        console.print(f"the state folder that was there is now {moved}")
    console.print(f"restored {source} to {settings.state_dir}; start it: edgeloop up")
