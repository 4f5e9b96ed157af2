"""The local stack under supervisord (Supervisor, a process manager): one
supervisord per state folder, configured from the settings (`supervisord.conf` in
the state folder's `run/`, written by `edgeloop up`), a program per service (the
command, environment and log file of `stack.services`), each restarted when it
exits. `Supervisor` is the client `edgeloop up`, `status` and `down` use, over
supervisord's XML-RPC on a Unix socket; the compose file is the production
definition of the same services."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from supervisor.xmlrpc import SupervisorTransport

from components.config import load_params
from components.errors import ServiceError
from stack.net import is_healthy, port_in_use
from stack.services import ServiceSpec, champion_version, local_services, log_file
from stack.settings import Settings

# Started once there is something for them: the worker after the deployments are
# registered, serving once the registry has a champion.
ON_DEMAND = ("worker", "serving")
# A Unix socket's path must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100
# supervisord's process states that mean "a process is there, or is coming".
LIVE = {"STARTING", "RUNNING", "BACKOFF"}


def run_dir(settings: Settings) -> Path:
    return (settings.state_dir / "run").resolve()


def socket_path(settings: Settings) -> Path:
    """The control socket in the state folder, or, where that path is too long for
    a Unix socket, in the temp folder under a name the state folder decides."""
    path = run_dir(settings) / "supervisor.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"edgeloop-{digest}.sock"


def _value(key: str, value: str) -> str:
    """One value for supervisord's config: `%` doubled (its interpolation)."""
    if '"' in value or "\n" in value:
        raise ServiceError(
            f"{key}: a value with a double quote or a newline cannot be passed to "
            "the process manager",
            hint="use a value without them (percent-encode it in a URL)",
        )
    return value.replace("%", "%%")


def program(spec: ServiceSpec, settings: Settings) -> str:
    """supervisord's section for one service: its command, its environment on top
    of supervisord's, its output in the service's log file, restarted on exit."""
    env = ",".join(f'{k}="{_value(k, v)}"' for k, v in spec.env.items())
    return "\n".join(
        [
            f"[program:{spec.name}]",
            f"command={_value(spec.name, shlex.join(spec.command))}",
            f"directory={_value('cwd', os.getcwd())}",
            f"environment={env}" if env else "",
            f"autostart={'false' if spec.name in ON_DEMAND else 'true'}",
            "autorestart=true",
            "startsecs=2",
            "startretries=3",
            "stopasgroup=true",  # serving's and the worker's own processes too
            "killasgroup=true",
            "stopwaitsecs=15",
            "redirect_stderr=true",
            f"stdout_logfile={_value('log', str(log_file(settings, spec.name)))}",
            "",
        ]
    )


def config(settings: Settings, specs: list[ServiceSpec]) -> str:
    sock = _value("socket", str(socket_path(settings)))
    run = _value("state_dir", str(run_dir(settings)))
    return "\n".join(
        [
            "[unix_http_server]",
            f"file={sock}",
            "chmod=0700",
            "[supervisord]",
            f"logfile={_value('log', str(log_file(settings, 'supervisord')))}",
            f"pidfile={run}/supervisord.pid",
            "nodaemon=true",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = "
            "supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{sock}",
            "",
        ]
        + [program(spec, settings) for spec in specs]
    )


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    url: str
    log: Path


def manager_running(settings: Settings) -> bool:
    """Whether the state folder's supervisord answers on its control socket."""
    path = socket_path(settings)
    if not path.exists():
        return False
    transport = SupervisorTransport(serverurl=f"unix://{path}")
    rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport)
    try:
        return rpc.supervisor.getState()["statename"] == "RUNNING"
    except OSError:  # the socket is left over from one that died
        return False


class Supervisor:
    """The client side: start supervisord, ask it, tell it."""

    def __init__(self, settings: Settings, params_file: Path = Path("params.yaml")):
        self.settings, self.params_file = settings, params_file
        self.specs = {s.name: s for s in local_services(settings, params_file)}
        transport = SupervisorTransport(serverurl=f"unix://{socket_path(settings)}")
        self.rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport)

    def running(self) -> bool:
        return manager_running(self.settings)

    def start(self) -> None:
        """supervisord, which starts every service but the on-demand ones at once;
        an error when a port a service needs is taken by another program."""
        host = self.settings.host
        for spec in self.specs.values():
            if spec.name not in ON_DEMAND and port_in_use(host, spec.port):
                raise ServiceError(
                    f"{spec.name}: port {spec.port} on {host} is already in use by "
                    "another program",
                    hint=f"stop it, or set {spec.port_setting} to a free port",
                )
        run_dir(self.settings).mkdir(parents=True, exist_ok=True)
        log_file(self.settings, "supervisord").parent.mkdir(parents=True, exist_ok=True)
        conf = run_dir(self.settings) / "supervisord.conf"
        conf.touch(mode=0o600)  # it holds the stack's secrets
        conf.write_text(config(self.settings, list(self.specs.values())))
        socket_path(self.settings).unlink(missing_ok=True)
        out = log_file(self.settings, "supervisord-console")
        with out.open("ab") as console:
            proc = subprocess.Popen(
                [Path(sys.executable).parent / "supervisord", "-c", str(conf)],
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while not self.running():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(
                    "the process manager (supervisord) did not start: " + _tail(out),
                    hint=f"full log: {out}",
                )
            time.sleep(0.3)

    def info(self, name: str) -> dict:
        return self.rpc.supervisor.getProcessInfo(name)

    def ensure(self, name: str) -> ServiceState:
        """Start the service unless it is running or starting; wait until it
        answers."""
        if self.info(name)["statename"] not in LIVE:
            self.rpc.supervisor.startProcess(name, False)
        return self.wait_healthy(name)

    def state(self, name: str) -> ServiceState:
        return self._state(name, self.info(name) if self.running() else None)

    def states(self) -> list[ServiceState]:
        """Every service, from one question to supervisord."""
        infos = (
            {i["name"]: i for i in self.rpc.supervisor.getAllProcessInfo()}
            if self.running()
            else {}
        )
        return [self._state(name, infos.get(name)) for name in self.specs]

    def _state(self, name: str, info: dict | None) -> ServiceState:
        spec = self.specs[name]
        live = info is not None and info["statename"] in LIVE and info["pid"]
        pid = info["pid"] if live else None
        healthy = is_healthy(spec.health_url)
        log = log_file(self.settings, name)
        return ServiceState(name, pid, pid is not None, healthy, spec.ui_url, log)

    def wait_healthy(self, name: str) -> ServiceState:
        """Until the service answers its health URL; an error that says why (it
        kept exiting, or did not answer in time) with its log's last lines."""
        spec = self.specs[name]
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while not is_healthy(spec.health_url):
            gave_up = self.info(name)["statename"] == "FATAL"
            if gave_up or time.monotonic() > deadline:
                log = log_file(self.settings, name)
                why = (
                    "stopped after exiting repeatedly"
                    if gave_up
                    else f"did not answer {spec.health_url} within "
                    f"{self.settings.startup_timeout_s:.0f} s"
                )
                raise ServiceError(
                    f"{name} {why}: {_tail(log)}",
                    hint=f"see {log}; raise EDGELOOP_STARTUP_TIMEOUT_S on a slow "
                    "machine",
                )
            time.sleep(0.5)
        return self.state(name)

    def stop(self) -> list[str]:
        """Stop every service and supervisord; the services that were running."""
        if not self.running():
            return []
        running = [
            info["name"]
            for info in self.rpc.supervisor.getAllProcessInfo()
            if info["statename"] in LIVE
        ]
        self.rpc.supervisor.shutdown()
        deadline = time.monotonic() + 60
        while socket_path(self.settings).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return running


@dataclass(frozen=True)
class Serving:
    """Serving as it answers: its URL and the model and version it serves (read
    from the service, not assumed from the registry)."""

    url: str
    model_name: str
    model_version: str


def serving_answers(url: str) -> tuple[str, str] | None:
    """(model name, version) the service at `url` answers with; None when no
    service answers there (or an older one without a model name)."""
    try:
        answer = httpx.post(f"{url}/describe", json={}, timeout=30)
        body = answer.json() if answer.is_success else {}
    except (httpx.HTTPError, ValueError):
        return None
    if "model_name" not in body:
        return None
    return str(body["model_name"]), str(body["model_version"])


def ensure_serving(
    settings: Settings,
    params_file: Path = Path("params.yaml"),
    progress: Callable[[str], None] = lambda _: None,
) -> Serving | None:
    """Serving of params' `registry.model_name`, started under the process manager
    once the registry has a champion; restarted when it serves another model (the
    params changed since it started: it reads them when it starts). None until
    there is a champion, or when the stack was not started by `edgeloop up`."""
    if champion_version(settings, params_file) is None:
        progress("serving waits for a champion (run the pipeline: `edgeloop run`)")
        return None
    supervisor = Supervisor(settings, params_file)
    if not supervisor.running():
        progress("serving is started by `edgeloop up` (its process manager is down)")
        return None
    progress(f"starting serving on {settings.serving_url}")
    supervisor.ensure("serving")
    wanted = load_params(params_file).registry.model_name
    answers = serving_answers(settings.serving_url)
    if answers is None or answers[0] != wanted:
        progress(f"restarting serving for model {wanted}")
        supervisor.rpc.supervisor.stopProcess("serving")
        supervisor.ensure("serving")
        answers = serving_answers(settings.serving_url)
    if answers is None:
        raise ServiceError(
            f"serving at {settings.serving_url} does not say which model it serves",
            hint=f"see {log_file(settings, 'serving')}",
        )
    return Serving(settings.serving_url, *answers)


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " / ".join(text.strip().splitlines()[-lines:])
