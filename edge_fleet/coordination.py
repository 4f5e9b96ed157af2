"""What the fleet server's replicas agree on through the database and nothing
else: who leads (runs the rollout controller and signs the TUF metadata it
publishes on its own), and one writer of the TUF repository at a time.

On PostgreSQL both are advisory locks (`pg_try_advisory_lock`, `pg_advisory_lock`)
held on a connection of their own: the database frees a lock when its holder's
connection ends, so a replica killed with SIGKILL, or cut off from the database,
stops leading as soon as PostgreSQL sees its connection go (at once for a killed
process on a live machine; TCP keepalives bound a dead machine, `KEEPALIVE`), and
another replica takes over at its next tick. On SQLite (the embedded default: one
process, the database a file in its state folder) they are `flock` locks on files
beside it, which the kernel frees when the holder dies.

A leader that lost its lock (its connection broke) stops at its next tick: every
write to the repository also takes the writer's lock, so two replicas never
write it at once, and the controller reads the rollout's state after taking it
(a stage is never judged on what another replica has already changed)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("edgeloop.fleet")

# Advisory lock keys (one bigint namespace per database: the fleet's own).
LEADER_KEY = 0x6564_676C_0001  # "edgl" 1: the rollout controller
PUBLISH_KEY = 0x6564_676C_0002  # the TUF repository's one writer
MIGRATE_KEY = 0x6564_676C_0003  # the schema's one migrator

# TCP keepalives on the fleet's connections, both ways: this side notices a
# database that went away, and PostgreSQL (the session's own settings) notices a
# replica whose machine died, and frees its locks, within about idle + interval x
# count seconds (11 s), not the operating system's two hours.
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
    "-c tcp_keepalives_count=3",
}


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def advisory_lock(engine: Engine, key: int) -> Iterator[None]:
    """PostgreSQL's session advisory lock `key`, on a connection held for the
    block; a connection that broke is dropped (its lock ends with it)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        connection.commit()
        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
            except SQLAlchemyError:
                connection.invalidate()


@contextmanager
def migrating(engine: Engine) -> Iterator[None]:
    """One replica at a time upgrades the schema (the others wait, then find it
    done)."""
    if not is_postgres(engine):
        yield
        return
    with advisory_lock(engine, MIGRATE_KEY):
        yield


class Coordinator:
    """This replica's leadership and the repository's writer lock (module doc)."""

    def __init__(self, engine: Engine, state_dir: Path) -> None:
        self.engine = engine
        self.state_dir = state_dir
        self.postgres = is_postgres(engine)
        self._local = threading.Lock()  # this process' threads
        self._leading: Connection | int | None = None  # the held lock's holder

    # -- leadership --------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._leading is not None

    def lead(self) -> bool:
        """Whether this replica leads now: keeps the lock it holds (checking its
        connection is alive), or tries to take it. Never blocks."""
        if self._leading is not None and self._still_held():
            return True
        self._drop()
        self._leading = self._try_take()
        if self._leading is not None:
            log.info("this replica leads the rollout controller (pid %d)", os.getpid())
        return self._leading is not None

    def _try_take(self) -> Connection | int | None:
        if not self.postgres:
            return _try_flock(self.state_dir / "controller.lock")
        connection = self.engine.connect()
        try:
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_KEY}
            ).scalar()
            connection.commit()
        except Exception:
            connection.invalidate()
            connection.close()
            raise
        if taken:
            return connection
        connection.close()
        return None

    def _still_held(self) -> bool:
        if not isinstance(self._leading, Connection):
            return True  # a flock is held while the process lives
        try:
            self._leading.execute(text("SELECT 1")).scalar()
            self._leading.commit()
            return True
        except SQLAlchemyError as error:  # the connection broke: the lock is gone
            log.warning("lost the controller's lock: %s", str(error).splitlines()[0])
            return False

    def _drop(self) -> None:
        held, self._leading = self._leading, None
        if isinstance(held, Connection):
            try:
                held.invalidate()  # never back to the pool: its lock goes with it
                held.close()
            except SQLAlchemyError:
                pass  # already gone
        elif isinstance(held, int):
            os.close(held)

    def release(self) -> None:
        """Stop leading (a clean shutdown: another replica takes over at once)."""
        self._drop()

    # -- the repository's writer -------------------------------------------------

    @contextmanager
    def publishing(self) -> Iterator[None]:
        """The one writer of the TUF repository, across threads and replicas."""
        with self._local:
            if not self.postgres:
                fd = os.open(
                    self.state_dir / "publish.lock", os.O_RDWR | os.O_CREAT, 0o600
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    yield
                finally:
                    os.close(fd)  # closing frees the lock
                return
            with advisory_lock(self.engine, PUBLISH_KEY):
                yield


def _try_flock(path: Path) -> int | None:
    """An open descriptor holding an exclusive `flock` on `path`, or None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
