"""The BentoML service as `bentoml serve` runs it, against a real MLflow registry:
it answers with the champion's version, refuses bad input with a 4xx that says what
was expected, exposes health and metrics, logs a sample of predictions (and no
line per request unless asked), and follows
an alias change made in the registry (through the webhook and the release flow)
without a failed request."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from cli.services import make_fleet_root
from edge_fleet.client import FleetAdmin
from flows.adapters import registry
from stack.contracts import SYNTHETIC_HEADER
from stack.mlflow_auth import ensure_user
from stack.net import free_port
from stack.secrets import gate_key, stack_secrets
from stack.services import ensure_webhook, fleet_spec, webhook_spec
from stack.settings import Settings
from tests.conftest import BIN, project_of, register_copy
from tests.oversized import MB, send_oversized, tree_rss
from tests.services import start_service, stop_pid
from tests.waits import poll

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def served(champion, stack_settings, tmp_path):
    """The session's champion as this test's own registered model, `bentoml serve`
    for it, the fleet server, and the stack's webhook receiver, which tells serving
    about alias changes. Serving's own poll is an hour, so a switch within the test
    can only come through the webhook."""
    from prefect.settings import PREFECT_API_URL

    project = project_of(
        champion,
        tmp_path,
        registry={"model_name": "it-serving"},
        # Two workers whatever the machine: the switch must reach both at once.
        serving={"poll_s": 3600, "log_sample_rate": 1.0, "workers": 2},
    )
    settings = stack_settings.model_copy(
        update={
            "prefect_api_url": PREFECT_API_URL.value(),
            "serving_port": free_port(),
            "fleet_port": free_port(),
        }
    )
    make_fleet_root(settings, project / "params.yaml")  # as `edgeloop up` does
    fleet = start_service(fleet_spec(settings, project / "params.yaml"), settings)
    receiver = start_service(webhook_spec(settings), settings)
    ensure_webhook(settings)
    # The registry's champion: its alias change reaches the receiver, whose release
    # sends it to the fleet.
    version = register_copy(MlflowClient(champion.tracking_uri), champion, "it-serving")
    url = settings.serving_url
    env = os.environ | {
        "EDGELOOP_MLFLOW_TRACKING_URI": champion.tracking_uri,
        "EDGELOOP_PARAMS": str(project / "params.yaml"),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    log = (project / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "bentoml"),
            "serve",
            "serving.service:Predictor",
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.serving_port),
        ],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (project / "serve.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "bentoml serve did not become ready"
        time.sleep(1)
    try:
        yield url, project, version, settings, proc.pid
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
        assert receiver.pid is not None and fleet.pid is not None
        stop_pid(receiver.pid)
        stop_pid(fleet.pid)


def logged_predictions(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def _rows(project: Path, n: int) -> list[list[float]]:
    test = pd.read_parquet(project / "data" / "prepared" / "test.parquet")
    return test.drop(columns="label").head(n).to_numpy().tolist()


def good_and_bad_at_once(url: str, rows: list[list[float]]) -> None:
    """Good and bad requests sent together (they would share a batch): every bad
    one is refused with its own 400, every good one answered."""
    bad_row = list(rows[0])
    bad_row[3] = 99.0

    def send(i: int) -> tuple[bool, int]:
        good = i % 3 != 0
        body = {"instances": [rows[i % len(rows)] if good else bad_row]}
        return good, httpx.post(f"{url}/predict", json=body, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(96)))
    assert {code for good, code in answers if good} == {200}, answers
    assert {code for good, code in answers if not good} == {400}, answers


def test_serving_answers_refuses_and_follows_the_alias(  # noqa: PLR0915
    served, mlflow_uri
):
    url, project, version, settings, pid = served
    rows = _rows(project, 20)
    answer = httpx.post(f"{url}/predict", json={"instances": rows[:3]})
    assert answer.status_code == 200
    body = answer.json()
    assert [a["model_version"] for a in body] == [version] * 3
    assert all(abs(sum(a["probabilities"]) - 1) < 1e-6 for a in body)
    described = httpx.post(f"{url}/describe", json={}).json()
    assert (described["model_name"], described["model_version"]) == (
        "it-serving",
        version,
    )
    assert described["workers"] == 2
    # No line per request in the serving log unless serving.access_log (BentoML's
    # default was one for each /predict: a log that grows with the traffic).
    serve_log = (project / "serve.log").read_text()
    assert "path=/predict" not in serve_log, serve_log[-2000:]

    bad = {
        "wrong shape": ({"instances": [[1.0, 2.0]]}, "expected 64 features, got 2"),
        "too many rows": ({"instances": [rows[0]] * 300}, "expected 1 to 256 rows"),
        "empty": ({"instances": []}, "expected 1 to 256 rows"),
        "wrong type": ({"instances": [["x"] * 64]}, "'x' is not a number"),
        "missing field": ({"rows": rows[:1]}, "instances"),
    }
    for case, (payload, expected) in bad.items():
        refused = httpx.post(f"{url}/predict", json=payload)
        assert refused.status_code == 400, case
        assert expected in refused.text, (case, refused.text)
    good_and_bad_at_once(url, rows)
    nan = httpx.post(
        f"{url}/predict",
        content='{"instances": [[NaN' + ", 0" * 63 + "]]}",
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 400 and "not a finite float32" in nan.text
    # Checked in the dtype the model runs in (1e39 overflows float32 to inf) and
    # against the data contract's range (validation.feature_range: [0, 16]); the
    # column is named from the optimize report's inputs.
    for value, expected in (
        (1e39, "instances[1][5] (pixel_0_5): 1e+39 is not a finite float32"),
        (1e30, "[5] (pixel_0_5): 1e+30 is outside [0, 16] (validation.feature_range)"),
        (-0.5, "instances[1][5] (pixel_0_5): -0.5 is outside [0, 16]"),
    ):
        row = list(rows[1])
        row[5] = value
        refused = httpx.post(f"{url}/predict", json={"instances": [rows[0], row]})
        assert refused.status_code == 400, (value, refused.text)
        assert expected in refused.text, refused.text
    # 200 MB is refused unread (serving.max_request_bytes), declared or chunked.
    for chunked in (False, True):
        before = tree_rss(pid)
        refusal = send_oversized(
            f"{url}/predict",
            chunked=chunked,
            headers={"content-type": "application/json"},
        )
        assert refusal.status == 413 and refusal.sent < 200 * MB, refusal
        assert tree_rss(pid) - before < 10 * MB
    not_json = httpx.post(
        f"{url}/predict",
        content="{not json",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400
    assert httpx.get(f"{url}/livez").status_code == 200
    assert "bentoml_service_request_total" in httpx.get(f"{url}/metrics").text

    # A new version behind `champion`, set as a person does in the MLflow UI: the
    # webhook's release flow tells serving, which switches while traffic flows, with
    # no failed request, in order.
    client = MlflowClient(mlflow_uri)
    current = client.get_model_version("it-serving", version)
    mlflow.set_tracking_uri(mlflow_uri)
    new = mlflow.register_model(current.source, "it-serving").version
    for key, value in current.tags.items():  # the same measured, shippable files
        client.set_model_version_tag("it-serving", new, key, value)
    registry.seal_decision(client, "it-serving", new, True, gate_key(Settings()))
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        # A new connection per request: the requests land on both workers.
        for _ in range(20_000):  # bounded: stopped by the test, or 20,000 requests
            if stop.is_set():
                return
            time.sleep(0.01)
            reply = httpx.post(
                f"{url}/predict", json={"instances": rows[:2]}, timeout=10
            )
            seen.append(
                (
                    reply.status_code,
                    reply.json()[0]["model_version"]
                    if reply.status_code == 200
                    else reply.text,
                )
            )

    sender = threading.Thread(target=traffic)
    sender.start()
    # Traffic flows before the change (MLflow reads its webhooks at each event).
    poll(lambda: len(seen), lambda n: n >= 10, 60)
    # What the MLflow UI sends when a data scientist (EDIT on the model) sets the
    # alias on the version page.
    ensure_user(
        settings, "ds-serving", "ds-password-1234", models={"it-serving": "EDIT"}
    )
    answer = httpx.post(
        f"{mlflow_uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": "it-serving", "alias": "champion", "version": new},
        auth=("ds-serving", "ds-password-1234"),
    )
    assert answer.status_code == 200, answer.text

    def after_switch() -> int:
        versions = [v for _, v in seen]
        return len(versions) - versions.index(str(new)) if str(new) in versions else 0

    # The switch, and traffic answered by the new version after it.
    switched = poll(after_switch, lambda n: n >= 10, 120)
    stop.set()
    sender.join(timeout=30)
    receiver_log = (settings.state_dir / "logs" / "webhook.log").read_text()[-4000:]
    assert switched >= 10, (seen[-5:], receiver_log)
    assert all(status == 200 for status, _ in seen), seen
    versions = [v for _, v in seen]
    switch = versions.index(str(new))
    assert set(versions[:switch]) == {version} and set(versions[switch:]) == {str(new)}
    # The release flow also sent the new champion's int8 file to the edge fleet.
    fleet = FleetAdmin(settings.fleet_url, stack_secrets(settings)["fleet_admin_token"])
    # The release flow runs in the receiver after serving's refresh; on a loaded
    # 2-core CI machine it once took longer than 60 s (the receiver's log says why).
    deadline = time.monotonic() + 150
    # (A delivery MLflow retried for the first champion may have come too.)
    mine: list[dict] = []
    while time.monotonic() < deadline and not mine:
        mine = [r for r in fleet.rollouts() if r["version"] == str(new)]
        time.sleep(0.5)
    receiver_log = (settings.state_dir / "logs" / "webhook.log").read_text()[-4000:]
    assert len(mine) == 1, (fleet.rollouts(), receiver_log)
    [rollout] = mine
    assert rollout["reason"] == "champion changed"
    assert rollout["state"] in {"running", "completed"}
    # The switch came from the release flow the webhook started (poll_s is an hour).
    assert ("champion", str(new), "registry (webhook)") in [
        (c.alias, c.to_version, c.who) for c in registry.history(client, "it-serving")
    ]

    # The log writer flushes after a second without new samples.
    logged = poll(
        lambda: logged_predictions(project / "data" / "predictions"),
        lambda frame: len(frame) >= 3,
        30,
    )
    assert {"model_version", "label", "confidence", "f0"} <= set(logged.columns)
    assert (
        yaml.safe_load((project / "params.yaml").read_text())["serving"][
            "log_sample_rate"
        ]
        == 1.0
    )
    synthetic_requests_are_not_logged(url, project)
    refuses_unsealed_and_converges(url, client, rows, mlflow_uri, version, str(new))


def synthetic_requests_are_not_logged(url: str, project: Path) -> None:
    """A load test's requests (header X-Edgeloop-Synthetic) are answered and kept
    out of the prediction log, so they cannot look like drift: on main, a load
    test of identical rows made `edgeloop drift check` say 0.83."""
    zeros, ones = [[0.0] * 64], [[1.0] * 64]
    for _ in range(50):  # a new connection each: both workers get some
        answer = httpx.post(
            f"{url}/predict",
            json={"instances": zeros},
            headers={SYNTHETIC_HEADER: "test"},
        )
        assert answer.status_code == 200
    for _ in range(10):  # then real ones, logged after the synthetic ones were not
        assert httpx.post(f"{url}/predict", json={"instances": ones}).status_code == 200
    folder = project / "data" / "predictions"
    features = [f"f{i}" for i in range(64)]
    logged = poll(
        lambda: logged_predictions(folder),
        lambda frame: (frame[features] == 1.0).all(axis=1).sum() >= 10,
        30,
    )
    assert not (logged[features] == 0.0).all(axis=1).any()


def refuses_unsealed_and_converges(  # noqa: PLR0917
    url: str,
    client: MlflowClient,
    rows: list,
    tracking_uri: str,
    older: str,
    current: str,
) -> None:
    """A version whose seal was copied from another, set champion by a user with
    EDIT (the fleet refused it; serving switched to it on main): refused, 409, the
    champion before it keeps answering; so is an older version without a rollback
    order. Then (with one) the alias flipped four times within a
    second under traffic (main wedged: 'workers [2] did not load version 1
    within 300 s'): serving converges on the last champion, no request fails."""
    source = client.get_model_version("it-serving", current)
    copied = mlflow.register_model(source.source, "it-serving").version
    for key, value in source.tags.items():  # its seal too: for another version
        client.set_model_version_tag("it-serving", copied, key, value)
    answer = httpx.post(
        f"{tracking_uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": "it-serving", "alias": "champion", "version": copied},
        auth=("ds-serving", "ds-password-1234"),
    )
    assert answer.status_code == 200, answer.text
    refused = httpx.post(f"{url}/refresh", json={}, timeout=60)
    assert refused.status_code == 409, refused.text
    assert f"v{copied}: its gate seal is for it-serving v{current}" in refused.text
    answers = [
        httpx.post(f"{url}/predict", json={"instances": rows[:1]}).json()
        for _ in range(20)
    ]
    assert {a[0]["model_version"] for a in answers} == {current}, answers
    # An older sealed version set champion (main switched to it like any
    # promotion): a downgrade is refused without a rollback order, and says how.
    client.set_registered_model_alias("it-serving", "champion", older)
    downgrade = httpx.post(f"{url}/refresh", json={}, timeout=60)
    assert downgrade.status_code == 409, downgrade.text
    assert f"edgeloop rollback --to {older}" in downgrade.text
    assert (
        httpx.post(f"{url}/predict", json={"instances": rows[:1]}).json()[0][
            "model_version"
        ]
        == current
    )
    # `edgeloop rollback --to` signs an order (who, why): the flips below are
    # rollbacks said out loud, and serving follows them.
    client.set_registered_model_alias("it-serving", "champion", copied)
    registry.rollback(
        client, "it-serving", "flip test", key=gate_key(Settings()), to=older
    )
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        for _ in range(20_000):  # bounded: stopped by the test
            if stop.is_set():
                return
            reply = httpx.post(f"{url}/predict", json={"instances": rows[:1]})
            ok = reply.status_code == 200
            seen.append(
                (
                    reply.status_code,
                    reply.json()[0]["model_version"] if ok else reply.text,
                )
            )
            time.sleep(0.01)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        for version in (older, current, older, current):
            client.set_registered_model_alias("it-serving", "champion", version)
            time.sleep(0.2)
        start = time.monotonic()
        done = httpx.post(f"{url}/refresh", json={}, timeout=60)
        assert done.status_code == 200, done.text
        assert time.monotonic() - start < 30  # not the 504 of a wedged switch
        poll(
            lambda: [v for _, v in seen[-20:]],
            lambda last: len(last) == 20 and set(last) == {current},
            60,
        )
    finally:
        stop.set()
        sender.join(timeout=30)
    assert all(status == 200 for status, _ in seen), [x for x in seen if x[0] != 200]
