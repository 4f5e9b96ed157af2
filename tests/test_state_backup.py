"""`edgeloop state backup | verify | restore` on a state folder made here: a live
SQLite database whose last rows are still in its write-ahead log, a secret file,
the folders that are not state; the whole stack's is in tests/flows/test_loop.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stack.backup import MANIFEST, BackupError, backup, restore, verify
from stack.settings import Settings


@pytest.fixture
def live(tmp_path: Path):
    """A state folder whose database has a writer open, in WAL mode, with rows
    not yet checkpointed into the database file."""
    state = tmp_path / "state"
    (state / "fleet").mkdir(parents=True)
    (state / "run").mkdir()
    (state / "logs").mkdir()
    (state / "run" / "supervisord.pid").write_text("1")
    (state / "logs" / "fleet.log").write_text("a log")
    tuf = state / "fleet-sim" / "d1" / "tuf"  # a device's TUF updater links its root
    (tuf / "root_history").mkdir(parents=True)
    (tuf / "root_history" / "1.root.json").write_text("{}")
    (tuf / "root.json").symlink_to("root_history/1.root.json")
    secrets = state / "secrets.json"
    secrets.write_text('{"webhook_secret": "s"}')
    secrets.chmod(0o600)
    db = sqlite3.connect(state / "fleet" / "fleet.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE devices (id TEXT)")
    db.executemany("INSERT INTO devices VALUES (?)", [(f"d{i}",) for i in range(50)])
    db.commit()
    assert (state / "fleet" / "fleet.db-wal").stat().st_size > 0
    yield Settings(state_dir=state)
    db.close()


def devices(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM devices").fetchone()[0]


def test_a_hot_backup_restores_whole(live: Settings, tmp_path: Path):
    # A plain copy of the database file misses what is still in the log.
    plain = tmp_path / "plain.db"
    plain.write_bytes((live.state_dir / "fleet" / "fleet.db").read_bytes())
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        devices(plain)

    manifest = backup(live, tmp_path / "backup")
    assert sorted(manifest.files) == [
        "fleet-sim/d1/tuf/root.json",
        "fleet-sim/d1/tuf/root_history/1.root.json",
        "fleet/fleet.db",
        "secrets.json",
    ]
    assert (tmp_path / "backup").stat().st_mode & 0o777 == 0o700

    restored = Settings(state_dir=tmp_path / "restored")
    assert restore(restored, tmp_path / "backup") is None
    assert devices(restored.state_dir / "fleet" / "fleet.db") == 50
    secrets = restored.state_dir / "secrets.json"
    assert secrets.read_text() == '{"webhook_secret": "s"}'
    assert secrets.stat().st_mode & 0o777 == 0o600
    root = restored.state_dir / "fleet-sim" / "d1" / "tuf" / "root.json"
    assert root.is_symlink() and root.read_text() == "{}"
    assert not (restored.state_dir / "run").exists()
    assert not (restored.state_dir / "logs").exists()


def test_a_damaged_backup_is_refused_by_name(live: Settings, tmp_path: Path):
    folder = tmp_path / "backup"
    backup(live, folder)
    target = Settings(state_dir=tmp_path / "restored")
    (folder / "secrets.json").write_text('{"webhook_secret": "t"}')
    with pytest.raises(BackupError, match=r"secrets\.json: its SHA-256"):
        restore(target, folder)
    (folder / "secrets.json").unlink()
    with pytest.raises(BackupError, match=r"secrets\.json is in the manifest"):
        verify(folder)
    (folder / "extra").write_text("x")
    (folder / MANIFEST).unlink()
    with pytest.raises(BackupError, match="not an edgeloop backup"):
        verify(folder)
    assert not target.state_dir.exists()  # nothing was put in place


def test_a_state_folder_in_place_is_moved_aside_never_lost(
    live: Settings, tmp_path: Path
):
    folder = tmp_path / "backup"
    backup(live, folder)
    with pytest.raises(BackupError, match="exists and is not empty"):
        backup(live, folder)
    with pytest.raises(BackupError, match="inside the state folder"):
        backup(live, live.state_dir / "copy")
    (live.state_dir / "secrets.json").write_text("changed since")
    with pytest.raises(BackupError, match="exists and is not empty"):
        restore(live, folder)
    moved = restore(live, folder, force=True)
    assert moved is not None and (moved / "secrets.json").read_text() == "changed since"
    assert (live.state_dir / "secrets.json").read_text() == '{"webhook_secret": "s"}'


def test_a_link_out_of_the_state_folder_is_refused(live: Settings, tmp_path: Path):
    (live.state_dir / "escape").symlink_to("../elsewhere")
    with pytest.raises(BackupError, match="escape: a link to ../elsewhere, outside"):
        backup(live, tmp_path / "backup")
