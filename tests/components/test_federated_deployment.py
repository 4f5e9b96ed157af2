"""The same ClientApp/ServerApp under Flower's deployment engine: a SuperLink and
two SuperNodes as separate processes on loopback, over TLS with certificates the
stack makes (components/training/federated/tls.py), the run submitted with `flwr run`; a
SuperNode that does not trust the SuperLink's CA is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sklearn.datasets import load_digits

from components.backends import load_classifier
from components.config import SplitConfig
from components.data.split import split_dataset
from components.training.federated.tls import make_certificates
from stack.net import free_port, port_in_use
from tests.conftest import BIN, REPO, default_params_dict

pytestmark = [pytest.mark.slow, pytest.mark.integration]
APP = REPO / "components" / "training" / "federated" / "app"


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """A SuperLink and two SuperNodes (partitions 0 and 1), TLS on, stopped
    afterwards."""
    env = os.environ | {
        "FLWR_HOME": str(tmp_path / "flwr"),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    port = free_port()
    (tmp_path / "flwr").mkdir()
    certs = make_certificates(tmp_path / "certs", ["127.0.0.1"])
    (tmp_path / "flwr" / "config.toml").write_text(
        '[superlink]\ndefault = "edgeloop"\n\n[superlink.edgeloop]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{certs.ca}"\n'
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    commands = [
        [
            "flower-superlink",
            "--ssl-ca-certfile",
            str(certs.ca),
            "--ssl-certfile",
            str(certs.server_cert),
            "--ssl-keyfile",
            str(certs.server_key),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            ":flwr-in-memory:",  # Flower's in-memory state (no file)
        ]
    ]
    commands += [
        [
            "flower-supernode",
            "--root-certificates",
            str(certs.ca),
            "--superlink",
            f"127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--node-config",
            f"partition-id={i} num-partitions=2",
        ]
        for i in range(2)
    ]
    procs = []
    try:
        for n, command in enumerate(commands):
            with (logs / f"{n}.log").open("w") as out:
                procs.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            if n == 0:
                deadline = time.monotonic() + 60
                while not port_in_use("127.0.0.1", port):
                    assert time.monotonic() < deadline, (logs / "0.log").read_text()
                    time.sleep(0.3)
        yield env, port
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def test_flwr_run_on_superlink_and_supernodes(federation, tmp_path: Path):
    env, _ = federation
    frame = (
        load_digits(as_frame=True).frame.head(600).rename(columns={"target": "label"})
    )
    split = split_dataset(frame, SplitConfig(), "label")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    split.train.to_parquet(prepared / "train.parquet", index=False)
    split.test.to_parquet(prepared / "test.parquet", index=False)
    params = default_params_dict(
        train={
            "batch_size": 32,
            "federated": {
                "enabled": True,
                "num_clients": 2,
                "rounds": 2,
                "local_epochs": 2,
            },
        }
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    run_config = (
        f"params-file='{tmp_path / 'params.yaml'}' "
        f"prepared-dir='{prepared}' out-dir='{out}'"
    )
    done = subprocess.run(
        [
            str(BIN / "flwr"),
            "run",
            str(APP),
            "edgeloop",
            "--stream",
            "--run-config",
            run_config,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[-1]["test_accuracy"] > rounds[0]["test_accuracy"] + 0.3
    classifier = load_classifier(out)
    test_x = split.test[classifier.spec.feature_columns].to_numpy("float32")
    accuracy = (
        classifier.predict_proba(test_x).argmax(1) == split.test["label"].to_numpy()
    ).mean()
    assert accuracy == pytest.approx(rounds[-1]["test_accuracy"])

    # The SuperLink speaks TLS only for its own CA: the same call from a client that
    # trusts another CA does not get through the handshake.
    def flwr_ls() -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "flwr"), "ls", "edgeloop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    trusted = flwr_ls()
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    stranger = make_certificates(tmp_path / "stranger", ["127.0.0.1"])
    config = Path(env["FLWR_HOME"]) / "config.toml"
    config.write_text(
        config.read_text().replace(str(tmp_path / "certs" / "ca.pem"), str(stranger.ca))
    )
    refused = flwr_ls()
    said = (refused.stdout + refused.stderr).lower()
    assert refused.returncode != 0 and "unavailable" in said, said
