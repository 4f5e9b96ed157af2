"""nginx in front of the fleet server's replicas, on this machine: the production
shape's configuration (fleet.conf.template, which docker-compose.yml gives the
nginx image) filled in, with a main configuration around it that keeps every file
nginx writes in one folder, and the process started and stopped. Used by the tests
and `bench/fleet_scale.py`; Debian's nginx-light package (tests/system_packages.sh)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import httpx

TEMPLATE = Path(__file__).with_name("fleet.conf.template")


def nginx_binary() -> str:
    """nginx's path; FileNotFoundError naming the package when it is missing."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise FileNotFoundError(
            "nginx not found: Debian's nginx-light package "
            "(tests/system_packages.sh installs it)"
        )
    return found


def render(
    *,
    listen: str,
    replicas: list[str],
    state_dir: Path,
    max_body: int,
    cache_dir: Path,
) -> str:
    """The template with its ${...} filled in (nginx's $variables left)."""
    return Template(TEMPLATE.read_text()).safe_substitute(
        FLEET_LISTEN=listen,
        FLEET_REPLICAS="\n    ".join(
            f"server {r} max_fails=1 fail_timeout=5s;" for r in replicas
        ),
        FLEET_STATE_DIR=str(state_dir.resolve()),
        FLEET_MAX_BODY=str(max_body),
        NGINX_CACHE_DIR=str(cache_dir.resolve()),
    )


def main_conf(http_conf: Path, run_dir: Path, workers: int = 1) -> str:
    """A whole configuration: its pid, logs and temporary files in `run_dir`, the
    fleet's http{} part included. Run by root (this machine, CI), the workers run
    as root too: they read a state folder under a private temporary folder."""
    run = run_dir.resolve()
    temp = "\n".join(
        f"    {kind}_temp_path {run}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes {workers};\n"
        f"pid {run}/nginx.pid;\n"
        f"error_log {run}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        f"{temp}\n"
        f"    include {http_conf.resolve()};\n"
        "}\n"
    )


@dataclass
class Nginx:
    """nginx on `listen` (host:port) in front of `replicas`, serving `state_dir`'s
    tuf/; files in `run_dir`."""

    run_dir: Path
    listen: str
    replicas: list[str]
    state_dir: Path
    max_body: int = 64 << 20
    workers: int = 1
    proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def error_log(self) -> Path:
        return self.run_dir / "error.log"

    def write(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        http_conf = self.run_dir / "fleet.conf"
        http_conf.write_text(
            render(
                listen=self.listen,
                replicas=self.replicas,
                state_dir=self.state_dir,
                max_body=self.max_body,
                cache_dir=self.run_dir,
            )
        )
        conf = self.run_dir / "nginx.conf"
        conf.write_text(main_conf(http_conf, self.run_dir, self.workers))
        return conf

    def start(self, timeout_s: float = 30) -> None:
        conf = self.write()
        binary = nginx_binary()
        checked = subprocess.run(
            [binary, "-t", "-q", "-c", str(conf), "-p", str(self.run_dir)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if checked.returncode != 0:
            raise RuntimeError(f"nginx -t {conf}: {checked.stderr.strip()}")
        self.proc = subprocess.Popen(
            [
                binary,
                "-c",
                str(conf),
                "-p",
                str(self.run_dir),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.run_dir / "stderr.log").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited {self.proc.returncode}: "
                    + (self.run_dir / "stderr.log").read_text()[-2000:]
                )
            try:
                httpx.get(f"{self.url}/tuf/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer on {self.listen} in {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGQUIT)  # finish what is in flight
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
