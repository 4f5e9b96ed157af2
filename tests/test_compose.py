"""docker-compose.yml and prefect.yaml, checked without Docker or Kubernetes (neither
runs on this machine). The compose file against the Compose Specification's JSON
schema (check-jsonschema's vendored copy) and against the code: the services it
names, the variables it needs, the settings its environment sets, the modules its
commands run. prefect.yaml against the flows it deploys."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from stack.settings import Settings
from tests.conftest import BIN, REPO

COMPOSE = REPO / "docker-compose.yml"


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_compose_file_meets_the_compose_specification(tmp_path: Path):
    checked = validate(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The validator is not vacuous: a misspelt key fails it.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE.read_text().replace("depends_on:", "depend_on:", 1), encoding="utf-8"
    )
    refused = validate(broken)
    assert refused.returncode != 0 and "depend_on" in refused.stdout


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_variables_and_settings_agree_with_the_code(
    compose: dict, monkeypatch: pytest.MonkeyPatch
):
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "mlflow",
        "prefect",
        "fleet",
        "fleet-api-1",
        "fleet-api-2",
        "webhook",
        "evidently",
        "register",
        "worker",
        "serving",
    }
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"

    # Every variable it reads is documented in .env.example.
    documented = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used <= documented, used - documented

    # The shared environment is valid for the stack's settings object, and the
    # services reach each other by their compose names.
    for key, value in compose["x-env"].items():
        monkeypatch.setenv(key, re.sub(r"\$\{[^}]*\}", "x", str(value)))
    settings = Settings()
    assert settings.webhook_url == "http://webhook:5055/mlflow/webhook"
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.prefect_api == "http://prefect:4200/api"
    assert settings.fleet_url == "http://fleet:8300"
    assert settings.serving_url == "http://serving:3000"

    # Each `python -m` command names a module of this project, and the CLI command
    # `register` exists.
    for service in services.values():
        command = service.get("command", [])
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, command
    from cli.app import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert "register" in names
    # The databases the servers use exist in the init script.
    created = set(re.findall(r"CREATE DATABASE (\w+)", str(compose["configs"])))
    urls = [
        services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"],
        services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"],
        services["fleet-api-1"]["environment"]["EDGELOOP_FLEET_DATABASE_URL"],
    ]
    assert {url.rsplit("/", 1)[1] for url in urls} == created


def test_the_fleet_s_nginx_fills_every_placeholder_of_its_template(compose: dict):
    """The fleet's nginx (the production shape): the template it mounts exists,
    its environment fills every ${...} of it, and its upstream names the API
    replicas, which serve no TUF file (`--static-tuf`) from the state it reads."""
    services = compose["services"]
    nginx = services["fleet"]
    mounted = {
        v.split(":")[0]: v.split(":")[1] for v in nginx["volumes"] if v[0] == "."
    }
    [(source, target)] = mounted.items()
    template = (REPO / source).read_text()
    assert target == "/etc/nginx/templates/fleet.conf.template"
    placeholders = set(re.findall(r"\$\{(\w+)\}", template))
    assert placeholders == set(nginx["environment"]), placeholders
    replicas = [name for name in services if name.startswith("fleet-api")]
    upstream = nginx["environment"]["FLEET_REPLICAS"]
    assert sorted(re.findall(r"server ([\w-]+):8300", upstream)) == replicas
    for name in replicas:
        command = services[name]["command"]
        assert "--static-tuf" in command and "--state-dir=/state/fleet" in command
    assert nginx["environment"]["FLEET_STATE_DIR"] == "/state/fleet"


def test_prefect_yaml_deploys_the_stacks_flows_with_their_parameters():
    """prefect.yaml (Docker and Kubernetes work pools; not run here): every
    entrypoint is one of the stack's flows, and every parameter it sets, in the
    deployment and in its drift trigger, is one the flow takes."""
    import inspect

    from prefect import Flow

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    pools = set()
    for deployment in config["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        takes = set(inspect.signature(flow.fn).parameters)
        given = [deployment["parameters"]] + [
            t["parameters"] for t in deployment.get("triggers", [])
        ]
        for parameters in given:
            assert set(parameters) <= takes, (deployment["entrypoint"], parameters)
        pools.add(deployment["work_pool"]["name"])
    assert pools == {"edgeloop-docker", "edgeloop-k8s"}
