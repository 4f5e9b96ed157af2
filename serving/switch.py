"""Which model version every worker of one `bentoml serve` answers with, switched for
all of them at one moment.

BentoML runs `serving.workers` processes behind one socket; `/refresh` reaches only
one of them, and each polls the alias on its own. A switch is therefore two-phase,
through a small folder the workers share (named after their common parent process):

1. the worker that sees a new version (under a file lock) writes it to `wanted`;
   every worker's follower thread loads it beside the model it serves and writes
   `ready.<worker index>`;
2. once every worker is ready, it writes `current` (an atomic rename). Each request
   reads `current` (one small file read) and runs the model of that version, which
   every worker already holds: a client never sees the new version and then the old.

A worker that starts later (a restart after a crash) loads `current` first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from components.errors import EdgeloopError, ServiceError

log = logging.getLogger("edgeloop.serving")


class Versioned(Protocol):
    version: str


M = TypeVar("M", bound=Versioned)


class Source(Protocol[M]):
    def current_version(self) -> str: ...

    def load(self, version: str) -> M: ...

    def check_switch(self, version: str, before: str) -> None:
        """Raise (an EdgeloopError saying why) when `version` may not replace
        `before` (an older version without a rollback order)."""


PREFIX = "edgeloop-serving-workers-"


def shared_folder(root: Path | None = None) -> Path:
    """One folder per `bentoml serve`: its workers are the children of one process.
    Folders of serves that have exited (their process is gone) are removed."""
    root = Path(tempfile.gettempdir()) if root is None else root
    for stale in root.glob(f"{PREFIX}*"):
        pid = stale.name.removeprefix(PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = root / f"{PREFIX}{os.getppid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class ModelSwitch(Generic[M]):
    def __init__(
        self,
        source: Source[M],
        folder: Path,
        workers: int,
        worker: int,
        timeout_s: float = 300.0,
    ) -> None:
        self.source, self.folder = source, folder
        self.workers, self.worker, self.timeout_s = workers, worker, timeout_s
        self.models: dict[str, M] = {}
        # Versions this worker refused to switch to (their seal did not verify,
        # they did not load): the reason, shown by /describe.
        self.refused: dict[str, str] = {}
        self.switching: str | None = None  # the version this worker is switching to
        self.loading = threading.Lock()
        self.stop = threading.Event()
        with self._locked(None):
            version = self._read("current") or source.current_version()
            self._hold(version)
            if self._read("current") is None:
                self._write("current", version)
        self.last = version  # the version this worker answered with last

    # -- the request path -------------------------------------------------------
    def current(self) -> M:
        """The model of the committed version (the one this worker held last if the
        file cannot be read, or names a version this worker does not hold)."""
        version = self._read("current")
        model = self.models.get(version) if version else None
        if model is None:
            model = self.models[self.last]
        self.last = model.version
        return model

    # -- switching --------------------------------------------------------------
    def switch(self, wait: bool = True) -> tuple[str, str]:
        """Bring every worker to the version the alias names now; (before, after).
        Returns once all workers answer with it, or raises ServiceError within
        `timeout_s` (every worker still on `before`). With wait=False (the alias
        poll), nothing is done while another worker is switching, and a version
        this worker refused to load is not tried again (a /refresh tries it)."""
        with self._locked(self.timeout_s if wait else 0.0) as held:
            before = self._read("current") or self.last
            if not held:
                if wait:
                    raise ServiceError(
                        "another serving worker kept switching for "
                        f"{self.timeout_s:g} s; still serving version {before}"
                    )
                return before, before
            version = self.source.current_version()
            if version == before or (not wait and version in self.refused):
                return before, before
            self.switching = version  # not forgotten before it is wanted
            try:
                self._load_first(version, before)
                self._write("wanted", version)
                try:
                    self._wait_ready(version)
                except ServiceError:
                    self._write("wanted", before)
                    raise
            finally:
                self.switching = None
            self.refused.pop(version, None)
            self._write("current", version)
            log.info("every worker now serves version %s (was %s)", version, before)
            return before, version

    def _load_first(self, version: str, before: str) -> None:
        """This worker loads `version` before any other is asked to: one that may
        not replace `before` (a downgrade without a rollback order), does not load
        or does not verify (its gate seal) goes no further, and is remembered as
        refused (the alias poll does not try it again; a /refresh does)."""
        try:
            self.source.check_switch(version, before)
            self._hold(version)
        except Exception as exc:
            self.refused[version] = str(exc)
            log.error("version %s refused; serving %s: %s", version, before, exc)
            if isinstance(exc, EdgeloopError):  # says what and why already
                raise
            raise ServiceError(
                f"version {version} did not load ({type(exc).__name__}: {exc}); "
                f"still serving version {before}"
            ) from exc

    def follow(self, poll_s: float, alias_poll_s: float) -> None:
        """The follower thread: load what another worker wants (every poll_s), check
        the alias itself (every alias_poll_s), drop models no longer needed."""
        next_alias = time.monotonic() + alias_poll_s
        while not self.stop.wait(poll_s):
            try:
                # Ready for what is wanted, also when it is already held (v1 -> v3 ->
                # v1: v1 was still loaded, and no ready file said so).
                wanted = self._read("wanted")
                if wanted and (
                    wanted not in self.models
                    or self._read(f"ready.{self.worker}") != wanted
                ):
                    self._hold(wanted)
                if time.monotonic() >= next_alias:
                    next_alias = time.monotonic() + alias_poll_s
                    self.switch(wait=False)
                self._forget()
            except Exception:  # keep serving what is loaded
                log.exception(
                    "could not follow the alias; still serving v%s", self.last
                )

    def _hold(self, version: str) -> None:
        with self.loading:
            if version not in self.models:
                self.models[version] = self.source.load(version)
                log.info("worker %d loaded version %s", self.worker, version)
        self._write(f"ready.{self.worker}", version)

    def _wait_ready(self, version: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            late = [
                i
                for i in range(1, self.workers + 1)
                if self._read(f"ready.{i}") != version
            ]
            if not late:
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"serving workers {late} did not load version {version} within "
                    f"{self.timeout_s:.0f} s; still serving the previous version",
                    hint="see the serving log",
                )
            time.sleep(0.02)

    def _forget(self) -> None:
        """Drop the models no longer current, wanted or last answered with; a ready
        file naming one is taken back first (else a later switch to that version
        would trust it, and commit a version this worker no longer holds)."""
        keep = {self._read("current"), self._read("wanted"), self.last, self.switching}
        with self.loading:
            for version in [v for v in self.models if v not in keep]:
                if self._read(f"ready.{self.worker}") == version:
                    self._write(f"ready.{self.worker}", self.last)
                del self.models[version]

    # -- the shared folder ------------------------------------------------------
    @contextmanager
    def _locked(self, wait_s: float | None) -> Iterator[bool]:
        """The switch lock, shared by the workers; yields whether it is held (False
        when another worker held it for `wait_s`; None: wait as long as it takes)."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        with (self.folder / "lock").open("a") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.02)
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, name: str) -> str | None:
        try:
            return (self.folder / name).read_text() or None
        except FileNotFoundError:
            return None

    def _write(self, name: str, value: str) -> None:
        """Whole or not at all for a reader (a rename; runtime state: no fsync)."""
        tmp = self.folder / f".{name}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(value)
        os.replace(tmp, self.folder / name)


def start_following(switch: ModelSwitch, poll_s: float, alias_poll_s: float) -> None:
    threading.Thread(
        target=switch.follow,
        args=(poll_s, alias_poll_s),
        daemon=True,
        name="model-switch",
    ).start()
