"""A backup of the state folder and its restore: every file the stack keeps there
(the registry's database and artifacts, Prefect's database, the fleet's database,
TUF repository and keys, the monitor's state, the secrets), with a manifest of
their SHA-256 digests, so a restore can tell a whole backup from a damaged one.

SQLite databases are copied with SQLite's online backup API (Python's
`sqlite3.Connection.backup`), which reads a consistent snapshot while the servers
keep writing, and includes what is still in the write-ahead log; every other file
is copied as it is. Processes' sockets and pid files (`run/`) and the logs are left
out. Databases on PostgreSQL are not in the state folder: the backup names them,
for `pg_dump`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.errors import EdgeloopError
from stack.settings import Settings
from stack.supervisor import manager_running

MANIFEST = "edgeloop-backup.json"
FORMAT = 1
# Not state: supervisord's socket, pid files and config (written again by `up`),
# and the services' logs.
SKIPPED_DIRS = ("run", "logs")
# SQLite's side files: their content is in the database the backup API copies.
SQLITE_SIDE = ("-wal", "-shm", "-journal")
SQLITE_HEADER = b"SQLite format 3\x00"


class BackupError(EdgeloopError):
    pass


@dataclass
class Manifest:
    created: str
    state_dir: str
    files: dict[str, dict] = field(default_factory=dict)
    external: list[str] = field(default_factory=list)

    def write(self, folder: Path) -> None:
        body = {"format": FORMAT, **self.__dict__}
        (folder / MANIFEST).write_text(json.dumps(body, indent=1, sort_keys=True))

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise BackupError(
                f"{path} does not exist: {folder} is not an edgeloop backup",
                hint="name the folder `edgeloop state backup` wrote",
            )
        try:
            body = json.loads(path.read_text())
            if body.pop("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT}")
            return cls(**body)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"{path}: not a backup manifest ({exc})") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live database, then SQLite's own integrity check of
    the copy."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        (result,) = dst.execute("PRAGMA integrity_check").fetchone()
        if result != "ok":
            raise BackupError(f"{source}: SQLite's integrity check says {result!r}")
        # A plain file: no write-ahead log beside it to carry along.
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        src.close()
        dst.close()


def _inside_link(path: Path, state_dir: Path) -> str:
    """A link's target, once it is relative and stays in the state folder (TUF's
    updater links `root.json` to its latest root), so it holds wherever the folder
    is restored."""
    target = os.readlink(path)
    if Path(target).is_absolute() or not (
        path.parent / target
    ).resolve().is_relative_to(state_dir.resolve()):
        raise BackupError(
            f"{path}: a link to {target}, outside the state folder or absolute; "
            "expected only relative links within it"
        )
    return target


def _state_files(state_dir: Path) -> list[Path]:
    files = []
    for path in sorted(state_dir.rglob("*")):
        relative = path.relative_to(state_dir)
        if relative.parts[0] in SKIPPED_DIRS or (
            path.is_dir() and not path.is_symlink()
        ):
            continue
        if not path.is_symlink() and not path.is_file():
            raise BackupError(
                f"{path}: not a plain file (a socket or device); the state folder "
                "holds only files the stack wrote"
            )
        if (
            path.name.endswith(SQLITE_SIDE)
            and path.with_name(path.name.rsplit("-", 1)[0]).is_file()
        ):
            continue
        files.append(path)
    return files


def external_databases(settings: Settings) -> list[str]:
    """The settings' databases that are not in the state folder."""
    named = {
        "mlflow_backend_store_uri": settings.mlflow_backend_store_uri,
        "mlflow_auth_database_uri": settings.mlflow_auth_database_uri,
        "prefect_database_url": settings.prefect_database_url,
        "fleet_database_url": settings.fleet_database_url,
    }
    return sorted(k for k, v in named.items() if v and not v.startswith("sqlite"))


def backup(settings: Settings, dest: Path) -> Manifest:
    """Copy the state folder into `dest` (a new folder, mode 700: it holds the
    secrets and signing keys), with its manifest."""
    state_dir = settings.state_dir
    if not state_dir.is_dir():
        raise BackupError(
            f"state folder {state_dir} does not exist: nothing to back up"
        )
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(
            f"{dest} exists and is not empty", hint="name a new folder for the backup"
        )
    if dest.resolve().is_relative_to(state_dir.resolve()):
        raise BackupError(f"{dest} is inside the state folder {state_dir}")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dest, 0o700)
    manifest = Manifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        state_dir=str(state_dir.resolve()),
        external=external_databases(settings),
    )
    for source in _state_files(state_dir):
        relative = source.relative_to(state_dir)
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if source.is_symlink():
            link = _inside_link(source, state_dir)
            target.symlink_to(link)
            manifest.files[relative.as_posix()] = {"link": link}
            continue
        sqlite = _is_sqlite(source)
        if sqlite:
            _copy_sqlite(source, target)
            shutil.copymode(source, target)
        else:
            shutil.copy2(source, target)
        manifest.files[relative.as_posix()] = {
            "sha256": _sha256(target),
            "size": target.stat().st_size,
            "mode": oct(source.stat().st_mode & 0o777),
            "sqlite": sqlite,
        }
    manifest.write(dest)
    return manifest


def verify(source: Path) -> Manifest:
    """The backup's manifest, once every file it lists is there with its digest
    and nothing else is."""
    manifest = Manifest.read(source)
    present = {
        p.relative_to(source).as_posix()
        for p in source.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.name != MANIFEST
    }
    missing = sorted(set(manifest.files) - present)
    extra = sorted(present - set(manifest.files))
    if missing:
        raise BackupError(
            f"{source}: {missing[0]} is in the manifest but missing "
            f"({len(missing)} missing in all)"
        )
    if extra:
        raise BackupError(
            f"{source}: {extra[0]} is not in the manifest ({len(extra)} such files)"
        )
    for name, entry in manifest.files.items():
        if "link" in entry:
            path = source / name
            if not path.is_symlink() or os.readlink(path) != entry["link"]:
                raise BackupError(
                    f"{path}: not the link to {entry['link']} the manifest lists"
                )
            continue
        if (source / name).is_symlink() or _sha256(source / name) != entry["sha256"]:
            raise BackupError(
                f"{source / name}: its SHA-256 is not the manifest's: the backup is "
                "damaged or was changed",
                hint="restore from another backup",
            )
    return manifest


def restore(settings: Settings, source: Path, force: bool = False) -> Path | None:
    """Put a verified backup in place of the state folder. An existing state folder
    is refused unless `force`, and then moved aside (returned), never deleted."""
    manifest = verify(source)
    state_dir = settings.state_dir
    if manager_running(settings):
        raise BackupError(
            f"the stack of {state_dir} is running", hint="stop it with `edgeloop down`"
        )
    moved = None
    if state_dir.exists() and any(state_dir.iterdir()):
        if not force:
            raise BackupError(
                f"state folder {state_dir} exists and is not empty",
                hint="pass --force to move it aside and restore in its place",
            )
        moved = state_dir.with_name(
            f"{state_dir.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}"
        )
        state_dir.rename(moved)
    elif state_dir.exists():
        state_dir.rmdir()
    staging = state_dir.with_name(f".{state_dir.name}.restoring")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True, mode=0o700)
    for name, entry in manifest.files.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if "link" in entry:
            target.symlink_to(entry["link"])
            continue
        shutil.copy2(source / name, target)
        os.chmod(target, int(entry["mode"], 8))
    staging.rename(state_dir)
    return moved
