"""Replicas agree through the database only (edge_fleet/coordination.py): one
leads, the other takes over when the leader's connection ends; the TUF
repository has one writer at a time; and the controller publishes what the
database records when a leader died between the two (`Controller.reconcile`)."""

from __future__ import annotations

import threading
import time
from uuid import uuid4

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from components.config import FleetConfig
from edge_fleet.coordination import Coordinator
from edge_fleet.db import Rollout, make_engine
from edge_fleet.device.scope import ROLLOUT
from edge_fleet.server import create_app
from tests.conftest import BACKENDS
from tests.edge_fleet.conftest import linear_onnx, make_root


@pytest.fixture(
    params=[
        pytest.param(b, marks=[pytest.mark.integration] if b != "sqlite" else [])
        for b in BACKENDS
    ]
)
def two_replicas(request, tmp_path) -> tuple[Coordinator, Coordinator]:
    """Two coordinators on one database (each its own engine, as two processes)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        cluster = request.getfixturevalue("postgres")
        url = cluster.url(cluster.create_database(f"fleet_{uuid4().hex[:12]}"))
    made = [Coordinator(make_engine(url), tmp_path) for _ in range(2)]
    yield made[0], made[1]
    for coordinator in made:
        coordinator.release()
        coordinator.engine.dispose()


def test_one_leads_and_the_other_takes_over_when_it_stops(two_replicas):
    a, b = two_replicas
    assert a.lead() and a.leading
    assert not b.lead() and not b.leading
    assert a.lead()  # keeps it
    a.release()
    assert b.lead() and not a.lead()


def test_a_leader_whose_connection_ended_stops_leading(two_replicas):
    """PostgreSQL frees a session's advisory locks when it ends: the backend
    killed here, as the database does for a dead client."""
    a, b = two_replicas
    if not a.postgres:
        pytest.skip("SQLite: the lock is the process' (flock), freed when it dies")
    assert a.lead()
    pid = a._leading.execute(text("SELECT pg_backend_pid()")).scalar()
    a._leading.commit()
    with b.engine.connect() as connection:
        # Returns once the backend is gone (PostgreSQL 14+: with a timeout).
        connection.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
        connection.commit()
    assert b.lead()  # freed with the connection
    assert not a.lead() and not a.leading  # a sees its connection broke


def test_the_repository_has_one_writer_across_replicas(two_replicas):
    a, b = two_replicas
    inside: list[str] = []
    entered = threading.Event()

    def hold() -> None:
        with a.publishing():
            inside.append("a in")
            entered.set()
            time.sleep(0.5)
            inside.append("a out")

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(5)
    with b.publishing():
        inside.append("b in")
    thread.join()
    assert inside == ["a in", "a out", "b in"]


def test_the_controller_publishes_what_the_database_records(tmp_path):
    """A leader committed wave-1 and died before publishing it: the next tick
    publishes wave-1, judges nothing again, and a finished rollout's channel
    left behind is taken down."""
    make_root(tmp_path / "fleet", tmp_path / "root-keys")
    cfg = FleetConfig(bake_s=3600, waves=[50])  # no stage is judged in this test
    app = create_app(
        tmp_path / "fleet", cfg, model_name="it-reconcile", admin_token="t"
    )
    fleet = app.state.fleet
    model = linear_onnx(tmp_path / "m.onnx", np.ones((64, 10)), np.zeros(10))
    with TestClient(app) as client:
        for version in ("1", "2"):
            uploaded = client.put(
                f"/v1/admin/models/{version}",
                params={
                    "model": "it-reconcile",
                    "variant": "linear",
                    "filename": "model.onnx",
                    "profiles": "gateway",
                    "features": 64,
                },
                content=model.read_bytes(),
                headers={"Authorization": "Bearer t"},
            )
            assert uploaded.status_code == 201, uploaded.text
        started = client.post(
            "/v1/admin/rollouts",
            json={"version": "2"},
            headers={"Authorization": "Bearer t"},
        ).json()["rollout"]
        assert fleet.repo.channels()[ROLLOUT]["stage"] == "canary"
        with fleet.coordinator.publishing(), fleet.sessions() as session:
            rollout = session.get(Rollout, started["id"])
            rollout.stage = 1  # committed; its publish lost with its leader
            session.commit()
            events = len(rollout.events)
            assert fleet.controller.reconcile(session) == (
                f"rollout {rollout.id} at wave-1"
            )
            assert fleet.repo.channels()[ROLLOUT]["stage"] == "wave-1"
            assert fleet.controller.reconcile(session) is None  # they agree now
            fleet.controller.tick(session)  # baking: nothing judged
            session.refresh(rollout)
            assert len(rollout.events) == events
            rollout.state = "aborted"  # finished; its channel left published
            session.commit()
            assert fleet.controller.reconcile(session) == "no active rollout"
            assert ROLLOUT not in fleet.repo.channels()
