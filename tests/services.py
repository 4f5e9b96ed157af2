"""One of the stack's services for a test, without the process manager: started in
its own process group from its `ServiceSpec`, waited for, and stopped after.
`edgeloop up` runs the same specs under circus (stack/supervisor.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from components.errors import ServiceError
from stack.net import is_healthy
from stack.services import ServiceSpec, log_file
from stack.settings import Settings


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    url: str
    log: Path


def start_service(spec: ServiceSpec, settings: Settings) -> Started:
    """Start one service and wait until it answers its health URL."""
    log = log_file(settings, spec.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            spec.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | spec.env,
            start_new_session=True,
        )
    deadline = time.monotonic() + settings.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"{spec.name} exited with code {proc.returncode} while starting: "
                + " / ".join(log.read_text(errors="replace").splitlines()[-5:])
            )
        if is_healthy(spec.health_url):
            return Started(spec.name, proc.pid, spec.ui_url, log)
        time.sleep(0.5)
    stop_pid(proc.pid)
    raise ServiceError(f"{spec.name} did not answer {spec.health_url} in time")


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after the timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == pid:
                return
            time.sleep(0.2)
