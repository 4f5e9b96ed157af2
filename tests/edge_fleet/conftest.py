"""A real fleet server process on loopback, real ONNX models (a linear classifier
fitted on scikit-learn's digits, written with onnx's helper API, run by ONNX Runtime
on the devices), and device agents talking HTTP to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine, text

from components.config import FleetConfig, load_params
from edge_fleet import keys
from edge_fleet.client import FleetAdmin
from edge_fleet.device.agent import Agent, Identity, RuntimeCache
from edge_fleet.sim.broken_model import fails_on_data
from edge_fleet.sim.faults import Faults
from edge_fleet.sim.runner import SHARED_RUNTIMES
from edge_fleet.sim.streams import DataStream
from stack import agent_dist
from stack.net import free_port
from tests.conftest import BACKENDS, default_params_dict

ADMIN = "admin-token-for-tests"
PROFILES = ["mcu", "gateway", "cloud"]
FAST_FLEET = {
    "poll_s": 0.2,
    "bake_s": 0.5,
    "stage_timeout_s": 20,
    "telemetry_batch": 64,  # 4 check-ins of one device give class shift its rows
    "offline_after_s": 30,
    "canary_percent": 25,
    "waves": [50],
    # A 25% canary of a dozen devices is itself over the default 20% fleet-wide stop.
    "checks": {"abort_failed_percent": 50},
}


FEATURES = 64  # the digits' 8x8 pixels: every test model takes them


@dataclass(frozen=True)
class Digits:
    x: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="session")
def digits() -> Digits:
    data = load_digits()
    return Digits(data.data.astype(np.float32), data.target)


def linear_onnx(
    path: Path, weights: np.ndarray, bias: np.ndarray, *, batch: int | None = None
) -> Path:
    """A classifier as ONNX: logits = x @ W + b (any batch, or only `batch` rows)."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
        ],
        "linear",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, [batch, weights.shape[0]]
            )
        ],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, [batch, weights.shape[1]]
            )
        ],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def models(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """good-1, good-2 (two fits), scrambled (loads, answers the wrong classes),
    fails-on-data (loads, answers rows of zeros, NaN for the devices' own rows: past
    the server's upload check, stopped by the canary)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, c in (("good-1", 1.0), ("good-2", 0.5)):
        fit = LogisticRegression(C=c, max_iter=300).fit(digits.x, digits.y)
        out[name] = linear_onnx(root / f"{name}.onnx", fit.coef_.T, fit.intercept_)
    fit = LogisticRegression(C=1.0, max_iter=300).fit(digits.x, digits.y)
    order = np.roll(np.arange(10), 3)  # every class answered as another one
    out["scrambled"] = linear_onnx(
        root / "scrambled.onnx", fit.coef_.T[:, order], fit.intercept_[order]
    )
    out["fails-on-data"] = fails_on_data(out["good-1"], root / "fails-on-data.onnx")
    return out


def make_root(state_dir: Path, root_keys: Path, cfg: FleetConfig | None = None) -> None:
    """The fleet's TUF root and keys in a server's state folder (once), with its
    root keys apart, as `edgeloop up` makes them."""
    cfg = cfg or FleetConfig()
    keys.init(
        state_dir / "tuf",
        state_dir / "keys",
        root_keys,
        threshold=cfg.root_threshold,
        keys=cfg.root_keys,
        expiry=timedelta(days=cfg.root_expiry_days),
        exist_ok=True,
    )


def device_on_v1_of(server, models, digits, http, home: Path) -> Agent:
    """One enrolled device running v1 (good-1) as the stable version; v2 (good-2)
    uploaded, not released."""
    [device] = make_agents(server, digits, http, 1, home=home)
    device.step()
    server.upload("1", models["good-1"])
    server.upload("2", models["good-2"])
    server.admin.retarget("1", "test")
    drive([device], lambda: device.version == "1")
    return device


@pytest.fixture
def device_on_v1(fleet_server, models, digits, http, tmp_path) -> Agent:
    return device_on_v1_of(fleet_server, models, digits, http, tmp_path / "device")


@dataclass
class FleetServer:
    url: str
    port: int
    state_dir: Path
    params_file: Path
    cfg: FleetConfig
    admin: FleetAdmin
    database_url: str | None = None  # None: SQLite in the state folder
    proc: subprocess.Popen | None = None
    args: tuple[str, ...] = ()  # more of the server's options (--static-tuf)
    log: Path = field(init=False)
    root_keys: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.state_dir.parent / "fleet-server.log"
        self.root_keys = self.state_dir.parent / "fleet-root-keys"

    def start(self, env_extra: dict[str, str] | None = None) -> None:
        """The server process; its TUF root made first, as `edgeloop up` does,
        with the root keys outside its state folder."""
        make_root(self.state_dir, self.root_keys, self.cfg)
        env = (
            os.environ
            | {
                "EDGELOOP_FLEET_ADMIN_TOKEN": ADMIN,
            }
            | (env_extra or {})
        )
        env.pop("EDGELOOP_FLEET_DATABASE_URL", None)
        if self.database_url:
            env["EDGELOOP_FLEET_DATABASE_URL"] = self.database_url
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_fleet.server",
                    "--port",
                    str(self.port),
                    "--state-dir",
                    str(self.state_dir),
                    "--params",
                    str(self.params_file),
                    *self.args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fleet server did not start"
            time.sleep(0.2)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    @property
    def factory_root(self) -> bytes:
        return (self.state_dir / "tuf" / "metadata" / "1.root.json").read_bytes()

    def enroll_code(self, devices: int = 1, device_id: str | None = None) -> str:
        """An enrollment code for `devices` devices (or `device_id` only) of any
        profile and cohort."""
        return self.admin.enrollment_code(
            profiles=PROFILES,
            cohorts=self.cfg.cohorts,
            devices=devices,
            device_id=device_id,
        )["code"]

    def upload(
        self,
        version: str,
        file: Path,
        profiles: list[str] | None = None,
        lineage: dict | None = None,
    ) -> dict:
        return self.admin.upload(
            version,
            file,
            model=load_params(self.params_file).registry.model_name,
            variant="linear",
            profiles=profiles or ["gateway"],
            features=FEATURES,
            lineage=lineage,
        )


def make_fleet_server(
    tmp_path: Path,
    database_url: str | None = None,
    model_name: str | None = None,
    **fleet: object,
) -> FleetServer:
    """A fleet server (not started) of the default params with `fleet` overrides,
    running registered model `model_name` (default: the params')."""
    params = default_params_dict(fleet=FAST_FLEET | fleet)
    if model_name is not None:
        params["registry"]["model_name"] = model_name
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return FleetServer(
        url,
        port,
        tmp_path / "fleet-state",
        params_file,
        load_params(params_file).fleet,
        FleetAdmin(url, ADMIN),
        database_url,
    )


@contextmanager
def running(server: FleetServer) -> Iterator[FleetServer]:
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def fleet_server(tmp_path: Path) -> Iterator[FleetServer]:
    with running(make_fleet_server(tmp_path)) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def fleet_database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the server's state folder), then a new PostgreSQL database."""
    if request.param == "sqlite":
        return None
    cluster = request.getfixturevalue("postgres")
    return cluster.url(cluster.create_database(f"fleet_{uuid4().hex[:12]}"))


@pytest.fixture
def fleet_server_on(
    tmp_path: Path, fleet_database_url: str | None
) -> Iterator[FleetServer]:
    """The fleet server on each backend in turn."""
    with running(make_fleet_server(tmp_path, fleet_database_url)) as server:
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def make_agents(
    server: FleetServer,
    digits: Digits,
    http: httpx.Client,
    n: int,
    *,
    home: Path,
    faults: Callable[[int], Faults] = lambda _: Faults(),
    profile: str = "gateway",
    first: int = 0,
    runtimes: RuntimeCache = SHARED_RUNTIMES,
) -> list[Agent]:
    """`n` agents of `profile`, dev-<first> on, enrolled with one code; `runtimes`:
    as the simulator's devices share them (a board's: with its TFLM arena)."""
    cohorts = server.cfg.cohorts
    code = server.enroll_code(devices=n)
    return [
        Agent(
            server.url,
            Identity(f"dev-{i:03d}", profile, cohorts[i % len(cohorts)]),
            home / f"dev-{i:03d}",
            factory_root=server.factory_root,
            enroll_code=code,
            cfg=server.cfg,
            stream=DataStream(digits.x, seed=i),
            http=http,
            faults=faults(i),
            runtimes=runtimes,
        )
        for i in range(first, first + n)
    ]


def drive(
    agents: list[Agent],
    until: Callable[[], bool],
    *,
    max_s: float = 60,
    pause_s: float = 0.1,
) -> None:
    """Step every agent in turn until `until()` (bounded by max_s)."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        for agent in agents:
            agent.step()
        if until():
            return
        time.sleep(pause_s)
    raise AssertionError(f"not reached within {max_s} s")


def rollout_over(server: FleetServer) -> Callable[[], bool]:
    return lambda: server.admin.summary()["active_rollout"] is None


def stored_rollout_states(server: FleetServer) -> list[str]:
    """The rollouts' states as stored in the server's database, read directly."""
    url = server.database_url or f"sqlite:///{server.state_dir / 'fleet.db'}"
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT state FROM rollouts ORDER BY id"))
            return [row[0] for row in rows]
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def agent_venvs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`edgeloop-agent` as a device gets it, by runtime extra (`onnx`, `litert`):
    the wheel built from the repository, in a fresh venv holding only it, that
    runtime and their dependencies (the lock's versions, installed offline)."""
    root = tmp_path_factory.mktemp("edgeloop-agent")
    wheel = agent_dist.build_wheel(root / "dist")
    made: dict[str, Path] = {}

    def command(extra: str) -> Path:
        if extra not in made:
            made[extra] = agent_dist.make_venv(root / extra, wheel, extra)
        return made[extra]

    return command


@pytest.fixture(scope="session")
def agent_command(agent_venvs: Callable[[str], Path]) -> Path:
    return agent_venvs("onnx")


def agent_settings(
    server: FleetServer,
    home: Path,
    samples: Path,
    *,
    device_id: str,
    url: str | None = None,
    **values: object,
) -> Path:
    """An agent's TOML file (beside its home) for a device of `server`'s fleet,
    polling as the fleet's params say; `values` add or override keys."""
    settings = {
        "server": url or server.url,
        "device_id": device_id,
        "profile": "cloud",
        "cohort": "north",
        "home": str(home),
        "root": str(server.state_dir / "tuf" / "metadata" / "1.root.json"),
        "samples": str(samples),
        "inference_port": free_port(),
        "replay_samples": True,
        "poll_s": server.cfg.poll_s,
        "telemetry_batch": server.cfg.telemetry_batch,
    } | values
    path = home.with_name(f"{home.name}.toml")
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return path


def keras_int8_files(
    digits: Digits, root: Path, *, hidden: int = 32, epochs: int = 20
) -> dict[str, Path]:
    """Two Keras models' full-integer TFLite files (`good-1`, `good-2`: a Keras
    champion's ship variant), converted by the optimize stage's own code; `hidden`
    units in their one hidden layer (40,000: a 3 MB file)."""
    import keras

    from components.optimization.tflite import convert_int8

    out = {}
    for version, seed in (("1", 0), ("2", 1)):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Rescaling(1 / 16),
                keras.layers.Dense(hidden, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(digits.x, digits.y, epochs=epochs, batch_size=64, verbose=0)
        out[f"good-{version}"] = convert_int8(
            model, root / f"v{version}.tflite", digits.x[:300]
        )
    return out
