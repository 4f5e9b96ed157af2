"""A throwaway PostgreSQL cluster on a loopback port, for the backend tests: Debian's
server binaries (`make test` installs the package when it is missing), `initdb` into
a temporary folder, password login over TCP on 127.0.0.1 only, removed after.

Run as root (CI, this machine), the server runs as the `postgres` system user that
Debian's package creates: PostgreSQL refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from stack.net import free_port

USER = "edgeloop"
INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, pg_ctl) were not found on PATH or under "
    "/usr/lib/postgresql/*/bin: `make test` installs Debian's `postgresql` package "
    "when it is missing (tests/system_packages.sh, apt-get as root)."
)


def server_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, newest Debian version first."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


@dataclass
class PostgresCluster:
    bin_dir: Path
    root: Path
    port: int
    password: str
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL: `postgresql+psycopg` (MLflow, the fleet server) or
        `postgresql+asyncpg` (Prefect's server)."""
        return (
            f"postgresql+{driver}://{USER}:{self.password}"
            f"@127.0.0.1:{self.port}/{database}"
        )

    def _connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=self.password,
            dbname=database,
            autocommit=True,
        )

    def create_database(self, name: str) -> str:
        """A new empty database; returns its name."""
        with self._connect("postgres") as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def tables(self, database: str) -> set[str]:
        with self._connect(database) as connection:
            rows = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
            return {row[0] for row in rows}

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        owner = pwd.getpwnam(self.run_as) if self.run_as else None
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if owner:
            for path in (self.root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        init = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
        pwfile.unlink()
        # Throwaway data: no fsync; TCP on loopback only, the socket in the folder.
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        started = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        if started.returncode != 0:
            log = (self.root / "server.log").read_text()[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}{log}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PostgresCluster:
    bin_dir = server_bin()
    if bin_dir is None:
        raise FileNotFoundError(INSTALL_HINT)
    run_as = "postgres" if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: its folders are private to root (mode 700).
    root = Path(tempfile.mkdtemp(prefix="edgeloop-pg-"))
    cluster = PostgresCluster(
        bin_dir, root, free_port(), secrets.token_urlsafe(16), run_as
    )
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
