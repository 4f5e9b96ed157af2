"""Shared fixtures: tiny in-memory data for unit tests, a scratch project for stage
and pipeline tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from components.config import Params, SplitConfig, load_params, parse_params
from components.data.split import SplitResult, split_dataset
from components.training.model import ModelSpec
from components.training.torch_train import Arrays
from flows.adapters import registry
from stack.mlflow_auth import ensure_service_user
from stack.net import free_port
from stack.secrets import MAKERS, SECRET_ENV, gate_key
from stack.services import mlflow_spec
from stack.settings import Settings
from tests.postgres import PostgresCluster, start_cluster
from tests.services import start_service, stop_pid

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def default_params() -> Params:
    return load_params(REPO / "params.yaml")


def tiny_frame(
    rows_per_class: int = 30, n_features: int = 4, seed: int = 0
) -> pd.DataFrame:
    """Three balanced classes, continuous features in [0, 16]: no duplicate rows."""
    rng = np.random.default_rng(seed)
    n = rows_per_class * 3
    frame = pd.DataFrame(
        rng.uniform(0, 16, size=(n, n_features)),
        columns=[f"f{i}" for i in range(n_features)],
    )
    frame["label"] = np.repeat([0, 1, 2], rows_per_class)
    return frame


def tiny_params(**overrides: dict) -> Params:
    raw = {
        "data": {
            "name": "tiny",
            "source": "data/sources/tiny.csv",
            "label_column": "label",
        },
        "validation": {
            "labels": [0, 1, 2],
            "feature_columns": ["f0", "f1", "f2", "f3"],
            "feature_range": [0, 16],
            "min_rows": 30,
        },
        "train": {"epochs": 3, "batch_size": 16},
        "registry": {"model_name": "edgeloop-test"},
    }
    for section, values in overrides.items():
        raw[section] = raw.get(section, {}) | values
    return parse_params(raw)


@pytest.fixture
def tiny() -> pd.DataFrame:
    return tiny_frame()


def make_project(root: Path, params: dict) -> Path:
    """A scratch edgeloop project: git + DVC repo with the stages, code and params."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    for package in ("components", "edge_fleet/device"):  # the stages' code
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "edge_fleet" / "__init__.py", root / "edge_fleet")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data" / "incoming").mkdir(parents=True)
    shutil.copy(REPO / "data" / "incoming" / "README.md", root / "data" / "incoming")
    (root / "data" / "sources").mkdir()
    shutil.copy(REPO / "data" / "sources" / "README.md", root / "data" / "sources")

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)

    run("git", "init", "-q")
    run("git", "config", "user.email", "test@edgeloop.invalid")
    run("git", "config", "user.name", "edgeloop tests")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "config", "core.analytics", "false")
    run(str(BIN / "dvc"), "remote", "add", "-d", "local", str(root / "remote"))
    (root / ".gitignore").write_text("/remote\n/reports\n/models\n/data/quarantine\n")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "scratch project")
    return root


def dvc_in(project: Path, *args: str) -> str:
    """`dvc ARGS` in a scratch project, with this environment's Python first on
    PATH (the stages run `python -m ...`); its output, once it exited 0."""
    done = subprocess.run(
        [str(BIN / "dvc"), *args],
        cwd=project,
        env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# Pipeline tests measure fewer latency runs and check one device profile.
FAST_OPTIMIZE = {
    "latency_runs": 20,
    "finetune_epochs": 1,
    "profiles": {"gateway": {"max_ram_kb": 524288, "runtime_memory_mb": 512}},
}


def default_params_dict(**overrides: dict) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in overrides.items():
        raw[section] = raw[section] | values
    return raw


@dataclass(frozen=True)
class DigitsSubset:
    """A split of the first `rows` digits, as frames and as arrays."""

    split: SplitResult
    spec: ModelSpec
    train: Arrays
    val: Arrays
    test: Arrays


def digits_subset(
    rows: int, split_cfg: SplitConfig, hidden_units: int = 32
) -> DigitsSubset:
    frame = (
        load_digits(as_frame=True).frame.head(rows).rename(columns={"target": "label"})
    )
    split = split_dataset(frame, split_cfg, "label")
    features = [c for c in frame.columns if c != "label"]
    spec = ModelSpec(
        n_features=64,
        classes=list(range(10)),
        feature_columns=features,
        hidden_units=hidden_units,
        image_shape=(8, 8),
    )

    def arrays(df: pd.DataFrame) -> Arrays:
        return Arrays(df[features].to_numpy(np.float32), df["label"].to_numpy(np.int64))

    return DigitsSubset(
        split, spec, arrays(split.train), arrays(split.val), arrays(split.test)
    )


# The databases the backend tests run on, in turn: the embedded default and a
# throwaway PostgreSQL cluster (tests/postgres.py).
BACKENDS = ("sqlite", "postgresql")


def system_package_missing(message: str, required_by: str) -> NoReturn:
    """A Debian package a test drives is not installed: the test is skipped, or
    fails where `required_by` is set (`make test` sets it after installing it)."""
    if os.environ.get(required_by):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    try:
        cluster = start_cluster()
    except FileNotFoundError as missing:
        system_package_missing(str(missing), "EDGELOOP_REQUIRE_POSTGRES")
    yield cluster
    cluster.stop()


# Real services on free loopback ports: an MLflow server (SQLite; one on PostgreSQL
# for the backend tests) and Prefect's test harness (a temporary Prefect server).


@pytest.fixture(scope="session", autouse=True)
def stack_secrets_given() -> Iterator[None]:
    """The stack's secrets, made once per test session and given as a compose
    install gives them (the environment): every server a test starts and every
    client in this process and its children use them. The pytest process is a
    client of the stack: MLflow's service user, Prefect's auth string (a test
    that needs `edgeloop up` to make its own secrets removes these)."""
    given = {SECRET_ENV[name]: make() for name, make in MAKERS.items()}
    given |= {
        "MLFLOW_TRACKING_USERNAME": Settings().mlflow_service_user,
        "MLFLOW_TRACKING_PASSWORD": given[SECRET_ENV["mlflow_service_password"]],
    }
    before = {name: os.environ.get(name) for name in given}
    os.environ.update(given)
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def start_mlflow(settings: Settings):
    """An MLflow server with its authentication app, and the stack's service user
    (whose credentials this process uses)."""
    state = start_service(mlflow_spec(settings), settings)
    ensure_service_user(settings, CHAMPION_PARAMS["registry"]["model_name"])
    return state


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        state_dir=tmp_path_factory.mktemp("edgeloop-state"),
        mlflow_port=free_port(),
        webhook_port=free_port(),
        serving_port=free_port(),  # nothing of a developer's running stack is reached
        fleet_port=free_port(),
    )


@pytest.fixture(scope="session")
def mlflow_uri(stack_settings: Settings) -> Iterator[str]:
    settings = stack_settings
    state = start_mlflow(settings)
    yield settings.tracking_uri
    assert state.pid is not None
    stop_pid(state.pid)


@pytest.fixture(scope="session")
def mlflow_postgres(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of a second MLflow server, its backend store on PostgreSQL: the one
    setting a user changes (EDGELOOP_MLFLOW_BACKEND_STORE_URI)."""
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("edgeloop-state-pg"),
        mlflow_port=free_port(),
        webhook_port=free_port(),
        serving_port=free_port(),
        fleet_port=free_port(),
        mlflow_backend_store_uri=postgres.url(postgres.create_database("mlflow")),
    )
    state = start_mlflow(settings)
    # MLflow made its tables in PostgreSQL, and no SQLite file.
    assert "registered_models" in postgres.tables("mlflow")
    assert not (settings.state_dir / "mlflow" / "mlflow.db").exists()
    yield settings
    assert state.pid is not None
    stop_pid(state.pid)


@pytest.fixture(params=BACKENDS)
def mlflow_stack(request: pytest.FixtureRequest) -> Settings:
    """The settings of a running MLflow server: on SQLite, then on PostgreSQL (same
    tests, both backends)."""
    if request.param == "sqlite":
        request.getfixturevalue("mlflow_uri")
        return request.getfixturevalue("stack_settings")
    return request.getfixturevalue("mlflow_postgres")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    # Offline: no telemetry heartbeat (it also contends for the harness' SQLite).
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    return tmp_path / "project"


@dataclass(frozen=True)
class Champion:
    """The one model the pipeline trains for the tests that need a trained
    champion (serving, the fleet CLI, the loop): its scratch project (data, DVC
    cache and lock, reports) and its registered version."""

    project: Path
    name: str
    version: str
    tracking_uri: str
    result: Any  # flows.training.PipelineResult, the pipeline's own answer


CHAMPION_PARAMS = {"optimize": FAST_OPTIMIZE, "registry": {"model_name": "it-champion"}}


@pytest.fixture(scope="session")
def champion(
    mlflow_uri: str, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> Champion:
    """The default params (fewer latency runs, one device profile), trained and
    registered once per session by the training pipeline; auto promotion makes the
    first passing version champion."""
    from flows.training import training_pipeline

    project = make_project(
        tmp_path_factory.mktemp("champion") / "project",
        default_params_dict(**CHAMPION_PARAMS),
    )
    result = training_pipeline(project_dir=str(project), tracking_uri=mlflow_uri)
    assert result.gate.passed and result.champion == result.model.version, result
    return Champion(
        project, result.model.name, result.model.version, mlflow_uri, result
    )


def project_of(champion: Champion, root: Path, **overrides: dict) -> Path:
    """A copy of the champion's project (its data, DVC cache and lock, git history)
    with params overridden by section: what DVC tracks is unchanged unless an
    override touches it, so the pipeline would skip every stage there."""
    project = root / "project"
    shutil.copytree(champion.project, project, symlinks=True)
    subprocess.run(  # its own DVC remote, not the champion's
        [str(BIN / "dvc"), "remote", "modify", "local", "url", str(project / "remote")],
        cwd=project,
        check=True,
        capture_output=True,
    )
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section] = params.get(section, {}) | values
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def register_copy(
    client: MlflowClient, champion: Champion, name: str, alias: str = "champion"
) -> str:
    """The champion's version (its run, files and tags) as a version of another
    registered model, holding `alias`: a test's own champion, no training."""
    source = client.get_model_version(champion.name, champion.version)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already there
        pass
    version = client.create_model_version(
        name,
        source.source,
        source.run_id,
        tags=source.tags,
        # MLflow 3: a logged model's version has source models:/<model id>; the
        # version read back does not carry model_id itself.
        model_id=source.model_id or source.source.removeprefix("models:/"),
    ).version
    # The champion's seal names its own model and version: the copy is sealed by
    # the stack's gates code with the session's key (the same file, passed).
    registry.seal_decision(client, name, version, True, gate_key(Settings()))
    client.set_registered_model_alias(name, alias, version)
    return str(version)


def register_measured_version(client: MlflowClient, name: str, accuracy: float) -> str:
    """A run with the measurements the gates read, registered as a new version."""
    experiment = client.get_experiment_by_name("registry-tests")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("registry-tests")
    )
    run = client.create_run(experiment_id)
    for key, value in {
        "test_accuracy": accuracy,
        "variant.int8_static.size_bytes": 55_000.0,
        "variant.int8_static.latency_median_ms": 0.02,
    }.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already there
        pass
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run.info.run_id
    )
    for key, value in {
        "edgeloop.ship_variant": "int8_static",
        "edgeloop.ship_accepted": "true",
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    return str(version.version)


def xdist_group_of(item: pytest.Item) -> str:
    """The tests that use the session's champion run on one worker (it is trained
    once per worker); every other module's tests stay on one worker (its module
    fixtures are built once)."""
    return "champion" if "champion" in item.fixturenames else item.module.__name__


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For pytest-xdist's `--dist loadgroup` (`make test`): each test's group, and
    the longest groups first (the champion's, then modules with slow tests), so the
    workers finish together instead of one waiting on the last long module."""
    slow_groups = {xdist_group_of(i) for i in items if i.get_closest_marker("slow")}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))
    items.sort(
        key=lambda i: (
            xdist_group_of(i) != "champion",
            xdist_group_of(i) not in slow_groups,
        )
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """A worker of `--dist loadgroup` whose test ids carry no group (pytest 9.2's
    ids, pytest-xdist#1386) would run a module's tests on both workers, each
    building its fixtures: stop instead of silently doubling the suite's time."""
    if getattr(session.config.option, "loadgroup", False) and session.items:
        ungrouped = [i.nodeid for i in session.items if "@" not in i.nodeid]
        if ungrouped:
            raise pytest.UsageError(
                f"pytest-xdist did not group {len(ungrouped)} tests (first: "
                f"{ungrouped[0]}): this pytest and pytest-xdist do not work together "
                "for --dist loadgroup; see pytest-xdist#1386"
            )
