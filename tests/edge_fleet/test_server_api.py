"""The fleet server's API refuses what it must, with a 4xx that says why, and stores
nothing from a refused call: unknown device, wrong token, one device posting as
another, oversized or malformed telemetry, missing admin token or enrollment key."""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, update

from components.config import FleetConfig
from edge_fleet.db import (
    MIGRATIONS,
    Base,
    Device,
    EnrollmentCode,
    Model,
    Rollout,
    Telemetry,
    TelemetryWindow,
    make_engine,
    now,
)
from edge_fleet.errors import FleetConflict
from edge_fleet.retention import roll_up, window_start
from edge_fleet.server import create_app
from tests.edge_fleet.conftest import linear_onnx, make_root

ADMIN = "admin-secret"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
MODEL = "it-fleet-api"
TELEMETRY = {
    "version": "1",
    "inferences": 16,
    "errors": 0,
    "latency_ms_median": 0.05,
    "latency_ms_p95": 0.09,
    "confidence_mean": 0.93,
    "class_counts": {"0": 8, "1": 8},
    "feature_stats": {"mean": [1.0], "std": [0.5], "min": [0.0], "max": [2.0]},
}


@pytest.fixture
def api(tmp_path):
    make_root(tmp_path / "fleet", tmp_path / "root-keys")
    app = create_app(
        tmp_path / "fleet",
        FleetConfig(max_telemetry_bytes=4096),
        model_name=MODEL,
        admin_token=ADMIN,
    )
    with TestClient(app) as client:
        yield client, app.state.fleet.sessions


def _code(client, **request) -> str:
    """An enrollment code from the admin API (default: one device, mcu, north)."""
    body = {"profiles": ["gateway"], "cohorts": ["north"]} | request
    reply = client.post("/v1/admin/enrollment-codes", json=body, headers=AS_ADMIN)
    assert reply.status_code == 201, reply.text
    return reply.json()["code"]


def _enroll_with(client, code: str, device_id: str, **body):
    return client.post(
        "/v1/enroll",
        json={"device_id": device_id, "profile": "gateway", "cohort": "north"} | body,
        headers={"X-Enroll-Code": code},
    )


def _enroll(client, device_id: str, cohort: str = "north") -> str:
    reply = _enroll_with(
        client,
        _code(client, device_id=device_id, cohorts=[cohort]),
        device_id,
        cohort=cohort,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()["token"]


@functools.cache
def _model(features: int = 1, classes: int = 2, bias: float = 0.0) -> bytes:
    """A real model file (ONNX, logits = x @ W + b): the server loads every upload
    in its device runtime before it stores it."""
    folder = Path(tempfile.mkdtemp(prefix="fleet-api-models-"))
    weights = np.linspace(-1, 1, features * classes).reshape(features, classes)
    path = linear_onnx(folder / "m.onnx", weights, np.full(classes, bias))
    return path.read_bytes()


def _upload(client, version: str = "1", features: int = 1, **params):
    """A model version the fleet has, taking `features` inputs (what a report for
    it is checked against)."""
    reply = client.put(
        f"/v1/admin/models/{version}",
        params={
            "model": MODEL,
            "variant": "fp32",
            "filename": "m.onnx",
            "profiles": "gateway",
            "features": str(features),
        }
        | params,
        content=_model(features),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert reply.status_code == 201, reply.text


def _checkin(client, device_id: str, token: str | None, body: object, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(
        f"/v1/devices/{device_id}/checkin",
        content=content,
        headers=headers | {"content-type": "application/json"},
        **kw,
    )


def _stored(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Telemetry))


GOOD = {"current_version": "1", "slot": "a", "health": "ok", "telemetry": TELEMETRY}


def _poisoned(case: str, says: str, status: int = 422, **telemetry: object) -> tuple:
    """422: a report that is not well formed; 409: one that does not fit the
    model version it names."""
    return (
        case,
        "dev-1",
        "dev-1",
        GOOD | {"telemetry": TELEMETRY | telemetry},
        status,
        says,
    )


def _stats(**lists: list[float]) -> dict:
    return {"feature_stats": TELEMETRY["feature_stats"] | lists}


# Reports that would break every drift check or stage judgement that reads them.
POISONED = [
    _poisoned(
        "one feature more than the model takes",
        "2 features: v1 takes 1",
        409,
        **_stats(mean=[1.0, 1.0], std=[0.5, 0.5], min=[0.0, 0.0], max=[2.0, 2.0]),
    ),
    _poisoned("lists of different lengths", "the same in each", **_stats(std=[1, 2])),
    _poisoned("an infinite latency", "latency_ms_median", latency_ms_median=math.inf),
    _poisoned("a NaN statistic", "finite", **_stats(mean=[math.nan])),
    _poisoned("a mean outside min..max", "min <= mean <= max", **_stats(mean=[9.0])),
    _poisoned("more errors than inferences", "at most one error", errors=17),
    _poisoned(
        "class counts that do not add up",
        "inferences - errors",
        class_counts={"0": 1000},
    ),
    _poisoned(
        "more inferences than a telemetry batch",
        "fleet.telemetry_batch",
        409,
        inferences=65,
        class_counts={"0": 65},
    ),
    _poisoned("a version the fleet does not have", "this fleet has", 409, version="9"),
]


def test_a_device_checks_in_and_reads_only_its_own_state(api):
    client, sessions = api
    _upload(client)
    token = _enroll(client, "dev-1")
    other = _enroll(client, "dev-2")
    assert _checkin(client, "dev-1", token, GOOD).status_code == 200
    assert _stored(sessions) == 1
    mine = client.get("/v1/devices/dev-1", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200 and mine.json()["current_version"] == "1"
    theirs = client.get(
        "/v1/devices/dev-2", headers={"Authorization": f"Bearer {token}"}
    )
    assert theirs.status_code == 403
    assert other  # dev-2 exists; dev-1's token just cannot read it


@pytest.mark.parametrize(
    ("case", "device", "token", "body", "status", "says"),
    [
        ("unknown device", "ghost", "dev-1", GOOD, 403, "another device"),
        # Without a valid token an unknown id looks like an enrolled one.
        ("unknown device, no token", "ghost", None, GOOD, 401, "Bearer"),
        ("unknown device, wrong token", "ghost", "nope", GOOD, 401, "unknown device"),
        ("no token", "dev-1", None, GOOD, 401, "Authorization: Bearer"),
        ("wrong token", "dev-1", "not-a-token", GOOD, 401, "unknown device token"),
        ("posing as another", "dev-2", "dev-1", GOOD, 403, "another device"),
        ("not JSON", "dev-1", "dev-1", b"{nope", 422, "JSON decode error"),
        (
            "wrong type",
            "dev-1",
            "dev-1",
            GOOD | {"telemetry": TELEMETRY | {"inferences": "many"}},
            422,
            "inferences",
        ),
        (
            "unknown field",
            "dev-1",
            "dev-1",
            GOOD | {"telemetry": TELEMETRY | {"raw_inputs": [[1, 2]]}},
            422,
            "raw_inputs",
        ),
        (
            "impossible value",
            "dev-1",
            "dev-1",
            GOOD | {"telemetry": TELEMETRY | {"confidence_mean": 7}},
            422,
            "confidence_mean",
        ),
        (
            "oversized",
            "dev-1",
            "dev-1",
            GOOD
            | {
                "telemetry": TELEMETRY
                | {
                    "feature_stats": {
                        k: [0.123456] * 400 for k in ("mean", "std", "min", "max")
                    }
                }
            },
            413,
            "fleet.max_telemetry_bytes",
        ),
        *POISONED,
    ],
)
def test_refused_check_ins_store_nothing(  # noqa: PLR0917 - pytest parameters
    api, case, device, token, body, status, says
):
    client, sessions = api
    _upload(client)
    tokens = {"dev-1": _enroll(client, "dev-1"), "dev-2": _enroll(client, "dev-2")}
    reply = _checkin(client, device, tokens.get(token, token), body)
    assert reply.status_code == status, (case, reply.text)
    assert says in reply.text, (case, reply.text)
    assert _stored(sessions) == 0
    with sessions() as session:
        assert all(d.last_seen is None for d in session.scalars(select(Device)))


def test_admin_and_enrollment_need_their_secrets(api):
    client, sessions = api
    assert client.get("/v1/admin/devices").status_code == 401
    wrong = client.get("/v1/admin/devices", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    token = _enroll(client, "dev-1")
    # A device token is not an admin token.
    as_device = client.get(
        "/v1/admin/devices", headers={"Authorization": f"Bearer {token}"}
    )
    assert as_device.status_code == 401
    no_key = client.post(
        "/v1/enroll",
        json={"device_id": "dev-9", "profile": "gateway", "cohort": "north"},
    )
    assert no_key.status_code == 401 and "X-Enroll-Code" in no_key.text
    again = _enroll_with(client, _code(client, devices=5), "dev-1")
    assert again.status_code == 409  # nobody takes over an enrolled id
    codes = client.post(
        "/v1/admin/enrollment-codes",
        json={"profiles": ["gateway"], "cohorts": ["north"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert codes.status_code == 401  # a device cannot make codes
    # The update metadata is for enrolled devices only.
    assert client.get("/tuf/metadata/1.root.json").status_code == 401
    root = client.get(
        "/tuf/metadata/1.root.json", headers={"Authorization": f"Bearer {token}"}
    )
    assert root.status_code == 200 and root.json()["signed"]["_type"] == "root"
    traversal = client.get(
        "/tuf/metadata/..%2F..%2Fkeys%2Froot.pem",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert traversal.status_code == 404
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 1


def test_range_requests_are_answered_with_partial_content(api, tmp_path):
    client, _ = api
    token = _enroll(client, "dev-1")
    auth = {"Authorization": f"Bearer {token}"}
    whole = client.get("/tuf/metadata/1.root.json", headers=auth).content
    part = client.get(
        "/tuf/metadata/1.root.json", headers=auth | {"Range": "bytes=10-"}
    )
    assert part.status_code == 206 and part.content == whole[10:]


def test_a_model_upload_keeps_its_class_prior_and_refuses_a_bad_one(api):
    client, sessions = api
    admin = {"Authorization": f"Bearer {ADMIN}"}
    params = {
        "model": MODEL,
        "variant": "int8_static",
        "filename": "m.onnx",
        "profiles": "gateway",
        "features": "1",
    }
    for bad in ('{"0": 0.7, "1": 0.7}', "[0.5, 0.5]", '{"0": "half"}', "{"):
        refused = client.put(
            "/v1/admin/models/3",
            params=params | {"class_prior": bad},
            content=_model(),
            headers=admin,
        )
        assert refused.status_code == 422 and "class_prior" in refused.text
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Model)) == 0
    stored = client.put(
        "/v1/admin/models/3",
        params=params | {"class_prior": '{"0": 0.25, "1": 0.75}'},
        content=_model(),
        headers=admin,
    )
    assert stored.status_code == 201, stored.text
    assert stored.json()["class_prior"] == {"0": 0.25, "1": 0.75}
    assert stored.json()["model_name"] == MODEL


def test_a_version_of_another_registered_model_is_refused_not_stored(api):
    """Another model's v3 neither lands in this fleet nor blocks this model's v3."""
    client, sessions = api
    admin = {"Authorization": f"Bearer {ADMIN}"}
    params = {
        "variant": "fp32",
        "filename": "m.onnx",
        "profiles": "gateway",
        "features": "1",
    }
    other = client.put(
        "/v1/admin/models/3",
        params=params | {"model": "someone-elses-model"},
        content=_model(bias=1.0),
        headers=admin,
    )
    assert other.status_code == 409, other.text
    assert MODEL in other.json()["detail"] and "someone-elses-model" in other.text
    ours = client.put(
        "/v1/admin/models/3",
        params=params | {"model": MODEL},
        content=_model(),
        headers=admin,
    )
    assert ours.status_code == 201, ours.text


def _put_model(client, version: str, params: dict, content: bytes | None = None):
    content = _model() if content is None else content
    return client.put(
        f"/v1/admin/models/{version}", params=params, content=content, headers=AS_ADMIN
    )


def test_an_uploaded_file_name_is_a_plain_name(api):
    """'..' was stored (201), and every device's install of it then failed with
    '[Errno 16] Device or resource busy'."""
    client, _ = api
    params = {"model": MODEL, "variant": "fp32", "profiles": "gateway", "features": "1"}
    for name in ("..", ".", "../up.onnx", "a/b.onnx", ".hidden.onnx", "a b.onnx"):
        refused = _put_model(client, "4", params | {"filename": name})
        assert refused.status_code == 422, (name, refused.text)
        assert "filename" in refused.text, refused.text
    ok = _put_model(client, "4", params | {"filename": "pruned_int8-static.v2.onnx"})
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("made_by", ["create_all today", "before class_prior"])
def test_a_fleet_database_from_before_migrations_upgrades_in_place(
    tmp_path: Path, made_by: str
):
    """A state folder made by today's main (tables from create_all, no Alembic),
    or by an older one without `models.class_prior`, keeps its rows and is brought
    to the newest revision; a second start changes nothing."""
    path = tmp_path / "fleet.db"
    old = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(old)
    old.dispose()
    with sqlite3.connect(path) as db:
        # What came with migrations after Alembic was adopted.
        db.execute("ALTER TABLE models DROP COLUMN features")
        db.execute("ALTER TABLE devices DROP COLUMN revoked_at")
        db.execute("DROP TABLE enrollment_codes")
        db.execute("DROP TABLE telemetry_windows")
        db.execute("ALTER TABLE telemetry DROP COLUMN benchmark")
        db.execute("ALTER TABLE models DROP COLUMN profile_files")
        db.execute("ALTER TABLE models DROP COLUMN lineage")
        for index in ("current_version", "health", "profile", "last_seen"):
            db.execute(f"DROP INDEX ix_devices_{index}")
        db.execute("DROP INDEX ix_telemetry_device_received")
        db.execute("DROP TABLE cohort_checks")
        if made_by == "before class_prior":
            db.execute("ALTER TABLE models DROP COLUMN class_prior")
            db.execute("ALTER TABLE models DROP COLUMN model_name")  # newer still
        db.execute(
            "INSERT INTO models (version, filename, sha256, size, variant, profiles, "
            "blob, created_at) VALUES ('1', 'm.onnx', 'ab', 5, 'fp32', '[]', 'b', "
            "'2026-11-01 00:00:00')"
        )
    for _ in range(2):
        make_engine(f"sqlite:///{path}").dispose()
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT version, class_prior FROM models").fetchall()
            revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
        assert rows == [("1", None)]
        assert revision == [(head_revision(),)]


def test_the_migrations_make_the_schema_the_models_describe(
    tmp_path: Path, fleet_database_url: str | None
):
    """A new fleet database comes from the migrations alone, and Alembic finds no
    difference between it and the SQLAlchemy models (a model changed without a
    migration fails here)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    with engine.connect() as connection:
        assert (
            compare_metadata(MigrationContext.configure(connection), Base.metadata)
            == []
        )


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def test_an_action_on_a_rollout_finished_meanwhile_is_a_conflict(api):
    """The admin route reads the rollout, then waits for the repository's writer
    lock while the controller (here: another admin call) finishes it. The pause
    must then be refused with the state it found, not overwrite `aborted` with
    `paused` (which left a finished rollout counted as active and refused every
    later one)."""
    client, sessions = api
    fleet = client.app.state.fleet
    admin = {"Authorization": f"Bearer {ADMIN}"}
    _upload(client, "1")
    started = client.post("/v1/admin/rollouts", json={"version": "1"}, headers=admin)
    assert started.status_code == 201, started.text
    rollout_id = started.json()["rollout"]["id"]
    with sessions() as session:
        seen = session.get(Rollout, rollout_id)  # what the route read first
        assert seen.state == "running"
        aborted = client.post(f"/v1/admin/rollouts/{rollout_id}/abort", headers=admin)
        assert aborted.status_code == 200, aborted.text
        with (
            fleet.coordinator.publishing(),
            pytest.raises(FleetConflict, match="is aborted"),
        ):
            fleet.controller.set_state(session, seen, "pause")
    stored = client.get(f"/v1/admin/rollouts/{rollout_id}", headers=admin).json()
    assert stored["state"] == "aborted"
    again = client.post(f"/v1/admin/rollouts/{rollout_id}/pause", headers=admin)
    assert again.status_code == 409 and "aborted" in again.text
    _upload(client, "2")
    next_one = client.post("/v1/admin/rollouts", json={"version": "2"}, headers=admin)
    assert next_one.status_code == 201, next_one.text


def test_a_code_enrolls_only_what_it_allows(api):
    """A device cannot choose an id, profile or cohort its code does not allow, nor
    use a code twice, nor one that expired; a batch code enrolls its count."""
    client, sessions = api
    one = _code(client, device_id="dev-1", profiles=["gateway"], cohorts=["north"])
    for body, says in (
        ({"device_id": "dev-2"}, "enrolls device 'dev-1' only"),
        ({"profile": "cloud"}, "profile 'cloud'"),
        ({"cohort": "south"}, "cohort 'south'"),
    ):
        refused = _enroll_with(client, one, **({"device_id": "dev-1"} | body))
        assert refused.status_code == 403 and says in refused.text, refused.text
    assert _enroll_with(client, one, "dev-1").status_code == 201
    used = _enroll_with(client, one, "dev-1b")
    assert used.status_code == 401 and "used up" in used.text
    batch = _code(client, devices=2, cohorts=["north", "south"])
    assert _enroll_with(client, batch, "b-1").status_code == 201
    assert _enroll_with(client, batch, "b-2", cohort="south").status_code == 201
    assert _enroll_with(client, batch, "b-3").status_code == 401
    assert _enroll_with(client, "not-a-code", "x-1").status_code == 401
    with sessions() as session:
        code = session.scalar(select(EnrollmentCode).where(EnrollmentCode.used == 0))
        assert code is None  # every code issued above was used
        expired = _code(client)
        session.execute(update(EnrollmentCode).values(expires_at=now()))
        session.commit()
    late = _enroll_with(client, expired, "late-1")
    assert late.status_code == 401 and "expired" in late.text
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 3


def test_revoke_rotate_and_delete_a_device(api):
    client, sessions = api
    _upload(client)
    token = _enroll(client, "dev-1")
    assert _checkin(client, "dev-1", token, GOOD).status_code == 200
    revoked = client.post("/v1/admin/devices/dev-1/revoke", headers=AS_ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert _checkin(client, "dev-1", token, GOOD).status_code == 401
    rotated = client.post("/v1/admin/devices/dev-1/token", headers=AS_ADMIN)
    new = rotated.json()["token"]
    assert new != token and _checkin(client, "dev-1", new, GOOD).status_code == 200
    assert _checkin(client, "dev-1", token, GOOD).status_code == 401
    gone = client.delete("/v1/admin/devices/dev-1", headers=AS_ADMIN)
    assert gone.status_code == 204
    assert _checkin(client, "dev-1", new, GOOD).status_code == 401
    assert _stored(sessions) == 0  # its telemetry went with it
    assert _enroll(client, "dev-1")  # the id may enroll again
    missing = client.post("/v1/admin/devices/nobody/revoke", headers=AS_ADMIN)
    assert missing.status_code == 404


def test_reports_past_retention_are_summarised_and_the_table_stays_bounded(api):
    """Reports older than fleet.telemetry_retention_s become one row per device,
    version and window with the same totals and pooled statistics; recent ones are
    kept as they are; windows past their retention go."""
    client, sessions = api
    fleet = client.app.state.fleet
    cfg = fleet.cfg.model_copy(
        update={"telemetry_retention_s": 3600, "telemetry_window_s": 3600}
    )
    _upload(client)
    token = _enroll(client, "dev-1")
    batches = [  # (mean, std) of one feature over 16 inferences each, its gaps
        (1.0, 0.5, {"0": 8, "1": 8}, 0.25),
        (3.0, 1.0, {"0": 16}, 0.0),
        (2.0, 0.0, {"1": 16}, 0.5),
    ]
    for mean, std, counts, gaps in batches:
        stats = {"mean": [mean], "std": [std], "min": [mean - std], "max": [mean + std]}
        # a table model's: the feature's gaps and its two categories' shares
        stats |= {"missing": [gaps], "shares": {"0": [gaps, 1 - gaps]}}
        body = GOOD | {
            "telemetry": TELEMETRY | {"feature_stats": stats, "class_counts": counts}
        }
        assert _checkin(client, "dev-1", token, body).status_code == 200
    assert _checkin(client, "dev-1", token, GOOD).status_code == 200  # stays raw
    hour = window_start(now(), 3600)
    with sessions() as session:
        ids = sorted(session.scalars(select(Telemetry.id)))
        session.execute(  # the first three: two hours old, in one window
            update(Telemetry)
            .where(Telemetry.id.in_(ids[:3]))
            .values(received_at=hour - timedelta(minutes=90))
        )
        session.commit()
        assert roll_up(session, cfg) == 3
        assert roll_up(session, cfg) == 0
        assert session.scalar(select(func.count()).select_from(Telemetry)) == 1
    [window] = client.get("/v1/admin/telemetry/windows", headers=AS_ADMIN).json()
    assert window["reports"] == 3 and window["inferences"] == 48
    assert window["class_counts"] == {"0": 24, "1": 24}
    pooled = np.concatenate(
        [np.full(8, 0.5), np.full(8, 1.5), np.full(8, 2.0), np.full(8, 4.0)]
        + [np.full(16, 2.0)]
    )  # values with the batches' means and standard deviations
    stats = window["feature_stats"]
    assert stats["mean"] == pytest.approx([pooled.mean()])
    assert stats["std"] == pytest.approx([pooled.std()], rel=1e-4)
    assert stats["min"] == [0.5] and stats["max"] == [4.0]
    assert stats["missing"] == pytest.approx([0.25])  # pooled over inferences
    assert stats["shares"]["0"] == pytest.approx([0.25, 0.75])
    with sessions() as session:  # 91 days on: the window is dropped too
        roll_up(session, cfg, at=now() + timedelta(days=91))
        assert session.scalar(select(func.count()).select_from(TelemetryWindow)) == 0


def test_an_upload_that_does_not_load_for_its_profiles_is_refused_before_any_rollout(
    api, tmp_path
):
    """A file that is not a model was stored (201) and completed canary -> full
    when the canary's devices reported success; now every upload is loaded in the
    device runtime of each profile it names, under that profile's budgets, and
    answers a row and a telemetry batch, before it is stored."""
    client, sessions = api
    params = {"model": MODEL, "variant": "fp32", "filename": "m.onnx", "features": "1"}
    one_row_only = linear_onnx(
        tmp_path / "b1.onnx", np.ones((1, 2)), np.zeros(2), batch=1
    )
    refused = {
        "not a model": (b"\x08\x07not an onnx model" * 64, {}, "INVALID_PROTOBUF"),
        "another width": (_model(features=3), {}, "Got: 1 Expected: 3"),
        "one row at a time": (one_row_only.read_bytes(), {}, "Expected: 1"),
        "other classes": (
            _model(classes=2),
            {"class_prior": '{"a": 0.5, "b": 0.25, "c": 0.25}'},
            "expected 3",
        ),
        "an ONNX file for a board": (
            _model(features=1),
            {"profiles": "mcu"},
            "profile mcu (runtime micro): expected a full-integer TFLM file "
            "(*.micro.tflite), not m.onnx",
        ),
    }
    for case, (content, extra, says) in refused.items():
        reply = _put_model(
            client, "7", params | {"profiles": "gateway"} | extra, content
        )
        assert reply.status_code == 422, (case, reply.text)
        assert "profile" in reply.text and says in reply.text, (case, reply.text)
    unknown = _put_model(client, "7", params | {"profiles": "toaster"})
    assert unknown.status_code == 409 and "optimize.profiles" in unknown.text
    # Another registered model (a second table's): refused, saying what to do.
    other = _put_model(
        client, "7", params | {"model": "edgeloop-penguins", "profiles": "gateway"}
    )
    assert other.status_code == 409 and "run a second fleet" in other.text
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Model)) == 0
    start = client.post(
        "/v1/admin/rollouts", json={"version": "7", "reason": "t"}, headers=AS_ADMIN
    )
    assert start.status_code == 404, start.text  # nothing to roll out
    # A profile's own file is checked the same way.
    assert _put_model(client, "7", params | {"profiles": "gateway"}).status_code == 201
    own = client.put(
        "/v1/admin/models/7/profiles/cloud",
        params={"variant": "fp32", "filename": "m.onnx"},
        content=b"\x08\x07not an onnx model" * 64,
        headers=AS_ADMIN,
    )
    assert own.status_code == 422 and "profile cloud" in own.text, own.text
    with sessions() as session:
        assert session.get(Model, "7").profile_files is None


def test_the_ledger_takes_a_time_in_any_offset_and_refuses_one_past_the_calendar(api):
    client, _ = api
    _enroll(client, "dev-ledger")
    path = "/v1/admin/devices/dev-ledger/ledger"
    east = client.get(
        path, params={"at": "2026-12-07T20:00:00+02:00"}, headers=AS_ADMIN
    )
    assert east.status_code == 200, east.text
    assert east.json()["at"] == "2026-12-07T18:00:00+00:00"
    assert east.json()["ran"] is None  # no report then
    assert "ran no version then" in east.json()["chain"][-1]
    past = client.get(
        path, params={"at": "9999-12-31T23:00:00-05:00"}, headers=AS_ADMIN
    )
    assert past.status_code == 422 and "out of range in UTC" in past.text, past.text
