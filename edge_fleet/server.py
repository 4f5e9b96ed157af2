"""The fleet server: devices, rollouts and telemetry (FastAPI on SQLAlchemy), the TUF
repository devices update from, and the rollout controller in a background thread.

    python -m edge_fleet.server --host 127.0.0.1 --port 8300

Device API (`Authorization: Bearer <device token>`; a device reads and writes only
its own state): enroll (with the fleet's enrollment key), check-in with health and a
telemetry batch, its own state, the TUF metadata and targets (HTTP range requests).
Admin API (`Authorization: Bearer <admin token>`): devices, fleet summary, model
upload, rollouts (start, pause, resume, abort, rollback), retarget.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated
# aliases (DB, Auth) as objects, not strings.

import argparse
import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, make_url, select
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from components.config import FleetConfig, load_params
from edge_fleet.controller import Controller
from edge_fleet.db import Device, Model, Rollout, Telemetry, make_sessions, now
from edge_fleet.errors import FleetConflict
from edge_fleet.tuf_repo import FleetRepository
from stack.settings import get_settings

log = logging.getLogger("edgeloop.fleet")
MAX_FEATURES = 4096
MAX_CLASSES = 1000


# -- request bodies (extra fields refused: a typo is an error, not ignored) --------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Enrollment(Strict):
    device_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    profile: str = Field(min_length=1, max_length=64)
    cohort: str = Field(min_length=1, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)


class FeatureStats(Strict):
    mean: list[float] = Field(max_length=MAX_FEATURES)
    std: list[float] = Field(max_length=MAX_FEATURES)
    min: list[float] = Field(max_length=MAX_FEATURES)
    max: list[float] = Field(max_length=MAX_FEATURES)


class TelemetryBatch(Strict):
    version: str = Field(min_length=1, max_length=32)
    inferences: int = Field(ge=1, le=1_000_000)
    errors: int = Field(ge=0, le=1_000_000)
    latency_ms_median: float = Field(ge=0)
    latency_ms_p95: float = Field(ge=0)
    confidence_mean: float = Field(ge=0, le=1)
    class_counts: dict[str, int] = Field(max_length=MAX_CLASSES)
    feature_stats: FeatureStats
    samples: list[list[float]] | None = Field(None, max_length=64)


class CheckIn(Strict):
    current_version: str | None = Field(None, max_length=32)
    slot: Literal["a", "b"] | None = None
    health: Literal["ok", "no_model", "failed"]
    failed_version: str | None = Field(None, max_length=32)
    error: str | None = Field(None, max_length=500)
    telemetry: TelemetryBatch | None = None


class RolloutRequest(Strict):
    version: str = Field(min_length=1, max_length=32)
    reason: str = Field("", max_length=500)


class StartRollout(RolloutRequest):
    # Abort another version's active rollout and start this one in one step (a new
    # champion replacing an older one's rollout: no interleaving can leave neither).
    supersede: bool = False


@dataclass
class FleetState:
    sessions: sessionmaker
    repo: FleetRepository
    controller: Controller
    cfg: FleetConfig
    admin_token: str
    enroll_key: str


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "expected header Authorization: Bearer <token>")
    return authorization.removeprefix("Bearer ").strip()


def database_url_for(state_dir: Path, database_url: str | None) -> str:
    """The SQLAlchemy URL given, or SQLite in the state folder."""
    return database_url or f"sqlite:///{state_dir / 'fleet.db'}"


def create_app(  # noqa: PLR0915 - the routes share its state
    state_dir: Path,
    cfg: FleetConfig,
    *,
    database_url: str | None = None,
    admin_token: str,
    enroll_key: str,
    tick_s: float = 0.5,
) -> FastAPI:
    state_dir.mkdir(parents=True, exist_ok=True)
    sessions = make_sessions(database_url_for(state_dir, database_url))
    repo = FleetRepository(
        state_dir / "tuf",
        state_dir / "keys",
        timestamp_expiry=timedelta(seconds=cfg.timestamp_expiry_s),
        metadata_expiry=timedelta(days=cfg.metadata_expiry_days),
    )
    fleet = FleetState(
        sessions, repo, Controller(repo, cfg), cfg, admin_token, enroll_key
    )
    stop = threading.Event()
    publish_lock = threading.Lock()  # one writer of the TUF repository at a time

    def control_loop() -> None:
        while not stop.wait(tick_s):
            try:
                with publish_lock, sessions() as session:
                    fleet.controller.tick(session)
            except Exception:
                log.exception("rollout controller tick failed")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Iterator[None]:
        thread = threading.Thread(target=control_loop, daemon=True)
        thread.start()
        yield
        stop.set()
        thread.join(timeout=10)

    def rollout_view(r: Rollout) -> dict:
        plan = fleet.controller.plan
        return _rollout_dict(r) | {
            "stage_name": plan[min(r.stage, len(plan) - 1)].name,
            "stages": [st.name for st in plan],
        }

    app = FastAPI(title="edgeloop fleet server", lifespan=lifespan)
    app.state.fleet = fleet

    def db() -> Iterator[Session]:
        with sessions() as session:
            yield session

    DB = Annotated[Session, Depends(db)]
    Auth = Annotated[str | None, Header()]

    def admin(authorization: Auth = None) -> None:
        if not hmac.compare_digest(_bearer(authorization), admin_token):
            raise HTTPException(401, "admin token required (wrong or missing)")

    def device_token(session: Session, authorization: str | None) -> Device:
        device = session.scalar(
            select(Device).where(
                Device.token_sha256 == _token_hash(_bearer(authorization))
            )
        )
        if device is None:
            raise HTTPException(401, "unknown device token")
        return device

    def own_device(
        device_id: str, session: Session, authorization: str | None
    ) -> Device:
        if session.get(Device, device_id) is None:
            raise HTTPException(404, f"device {device_id!r} is not enrolled")
        device = device_token(session, authorization)
        if device.id != device_id:
            raise HTTPException(
                403, f"this token belongs to another device, not {device_id!r}"
            )
        return device

    @app.exception_handler(FleetConflict)
    async def _conflict(_request: Request, exc: FleetConflict) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # -- device API -----------------------------------------------------------

    @app.post("/v1/enroll", status_code=201)
    def enroll(
        body: Enrollment,
        session: DB,
        x_enroll_key: Annotated[str | None, Header()] = None,
    ) -> dict:
        if not x_enroll_key or not hmac.compare_digest(x_enroll_key, enroll_key):
            raise HTTPException(401, "enrollment key required (header X-Enroll-Key)")
        if session.get(Device, body.device_id) is not None:
            raise HTTPException(409, f"device {body.device_id!r} is already enrolled")
        token = secrets.token_urlsafe(32)
        session.add(
            Device(
                id=body.device_id,
                token_sha256=_token_hash(token),
                profile=body.profile,
                cohort=body.cohort,
                labels=body.labels,
            )
        )
        session.commit()
        return {"device_id": body.device_id, "token": token, "poll_s": cfg.poll_s}

    @app.post("/v1/devices/{device_id}/checkin")
    async def checkin(
        device_id: str, request: Request, authorization: Auth = None
    ) -> dict:
        raw = await request.body()
        if len(raw) > cfg.max_telemetry_bytes:
            raise HTTPException(
                413,
                f"check-in body is {len(raw)} bytes; at most "
                f"{cfg.max_telemetry_bytes} (fleet.max_telemetry_bytes)",
            )
        try:
            body = CheckIn.model_validate_json(raw)
        except ValueError as exc:
            raise HTTPException(422, f"malformed check-in: {exc}") from None
        with sessions() as session:
            device = own_device(device_id, session, authorization)
            device.current_version = body.current_version
            device.slot = body.slot
            device.health = body.health
            device.last_seen = now()
            device.last_error = body.error
            if body.failed_version is not None:
                device.failed_version = body.failed_version
            if body.telemetry is not None:
                t = body.telemetry
                session.add(
                    Telemetry(
                        device_id=device.id,
                        cohort=device.cohort,
                        version=t.version,
                        inferences=t.inferences,
                        errors=t.errors,
                        latency_ms_median=t.latency_ms_median,
                        latency_ms_p95=t.latency_ms_p95,
                        confidence_mean=t.confidence_mean,
                        class_counts=t.class_counts,
                        feature_stats=t.feature_stats.model_dump(),
                        samples=t.samples
                        if device.cohort in fleet_sample_cohorts()
                        else None,
                    )
                )
            session.commit()
        return {"poll_s": cfg.poll_s, "timestamp_version": repo.timestamp().version}

    def fleet_sample_cohorts() -> set[str]:
        return set(cfg.sample_cohorts)

    @app.get("/v1/devices/{device_id}")
    def device_state(device_id: str, session: DB, authorization: Auth = None) -> dict:
        return _device_dict(own_device(device_id, session, authorization))

    def _tuf_file(base: Path, name: str, session: Session, authorization: str | None):
        device_token(session, authorization)
        path = (base / name).resolve()
        if not path.is_relative_to(base.resolve()) or not path.is_file():
            raise HTTPException(404, f"{name} not found")
        return FileResponse(path)  # Starlette answers Range requests (206)

    @app.get("/tuf/metadata/{name}")
    def tuf_metadata(name: str, session: DB, authorization: Auth = None):
        return _tuf_file(repo.metadata_dir, name, session, authorization)

    @app.get("/tuf/targets/{name:path}")
    def tuf_target(name: str, session: DB, authorization: Auth = None):
        return _tuf_file(repo.targets_dir, name, session, authorization)

    # -- admin API --------------------------------------------------------------

    admin_api = [Depends(admin)]

    @app.get("/v1/admin/devices", dependencies=admin_api)
    def devices(session: DB, cohort: str | None = None) -> list[dict]:
        query = select(Device).order_by(Device.id)
        if cohort:
            query = query.where(Device.cohort == cohort)
        return [_device_dict(d) for d in session.scalars(query)]

    @app.get("/v1/admin/fleet", dependencies=admin_api)
    def summary(session: DB) -> dict:
        rows = session.execute(
            select(Device.current_version, Device.health, func.count()).group_by(
                Device.current_version, Device.health
            )
        ).all()
        active = session.scalar(
            select(Rollout).where(Rollout.state.in_(("running", "paused")))
        )
        last = session.scalar(select(Rollout).order_by(Rollout.id.desc()))
        return {
            "devices": sum(r[2] for r in rows),
            "by_version": [
                {"version": v, "health": h, "devices": n} for v, h, n in rows
            ],
            "channels": repo.channels(),
            "active_rollout": rollout_view(active) if active else None,
            "last_rollout": rollout_view(last) if last else None,
        }

    @app.get("/v1/admin/telemetry", dependencies=admin_api)
    def telemetry(
        session: DB, cohort: str | None = None, limit: int = 100
    ) -> list[dict]:
        """The most recent telemetry reports (of one cohort), newest first."""
        query = (
            select(Telemetry).order_by(Telemetry.id.desc()).limit(min(limit, 10_000))
        )
        if cohort:
            query = query.where(Telemetry.cohort == cohort)
        return [
            {
                "device_id": t.device_id,
                "cohort": t.cohort,
                "version": t.version,
                "received_at": t.received_at.isoformat(),
                "inferences": t.inferences,
                "errors": t.errors,
                "latency_ms_median": t.latency_ms_median,
                "confidence_mean": t.confidence_mean,
                "class_counts": t.class_counts,
                "feature_stats": t.feature_stats,
            }
            for t in session.scalars(query)
        ]

    @app.get("/v1/admin/cohorts", dependencies=admin_api)
    def cohorts(session: DB) -> list[str]:
        return list(
            session.scalars(select(Device.cohort).distinct().order_by(Device.cohort))
        )

    @app.put("/v1/admin/models/{version}", dependencies=admin_api, status_code=201)
    async def upload(
        version: str,
        request: Request,
        *,
        variant: str,
        filename: str,
        profiles: str,
        class_prior: str | None = None,
    ) -> dict:
        data = await request.body()
        if not data:
            raise HTTPException(422, "expected the model file as the request body")
        prior = _class_prior(class_prior)
        if Path(filename).name != filename or not filename:
            raise HTTPException(422, f"filename {filename!r}: expected a bare name")
        digest = hashlib.sha256(data).hexdigest()
        blob = state_dir / "models" / f"{digest}-{filename}"
        with sessions() as session:
            existing = session.get(Model, version)
            if existing is not None:
                if existing.sha256 != digest:
                    raise HTTPException(
                        409, f"model version {version} exists with other content"
                    )
                return _model_dict(existing)
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            model = Model(
                version=version,
                filename=filename,
                sha256=digest,
                size=len(data),
                variant=variant,
                profiles=[p for p in profiles.split(",") if p],
                blob=str(blob),
                class_prior=prior,
            )
            session.add(model)
            session.commit()
            return _model_dict(model)

    @app.post("/v1/admin/rollouts", dependencies=admin_api, status_code=201)
    def start_rollout(body: StartRollout, session: DB, response: Response) -> dict:
        """201 when a rollout started; 200 for a no-op (the version is already
        rolling out, or already stable), which says so in `outcome`."""
        with publish_lock:
            started = fleet.controller.start(
                session, body.version, body.reason, supersede=body.supersede
            )
        if started.outcome != "started":
            response.status_code = 200
        return {
            "outcome": started.outcome,
            "detail": started.detail,
            "rollout": rollout_view(started.rollout) if started.rollout else None,
            "superseded": (
                rollout_view(started.superseded) if started.superseded else None
            ),
        }

    @app.get("/v1/admin/rollouts", dependencies=admin_api)
    def rollouts(session: DB) -> list[dict]:
        return [
            rollout_view(r)
            for r in session.scalars(select(Rollout).order_by(Rollout.id.desc()))
        ]

    @app.get("/v1/admin/rollouts/{rollout_id}", dependencies=admin_api)
    def rollout(rollout_id: int, session: DB) -> dict:
        found = session.get(Rollout, rollout_id)
        if found is None:
            raise HTTPException(404, f"rollout {rollout_id} does not exist")
        return rollout_view(found)

    @app.post("/v1/admin/rollouts/{rollout_id}/{action}", dependencies=admin_api)
    def rollout_action(
        rollout_id: int,
        action: Literal["pause", "resume", "abort", "rollback"],
        session: DB,
    ) -> dict:
        found = session.get(Rollout, rollout_id)
        if found is None:
            raise HTTPException(404, f"rollout {rollout_id} does not exist")
        with publish_lock:
            return rollout_view(fleet.controller.set_state(session, found, action))

    @app.post("/v1/admin/retarget", dependencies=admin_api)
    def retarget(body: RolloutRequest, session: DB) -> dict:
        with publish_lock:
            stopped = fleet.controller.retarget(
                session, body.version, body.reason or "retarget"
            )
        return {
            "stable": body.version,
            "rolled_back": rollout_view(stopped) if stopped else None,
        }

    return app


def _class_prior(raw: str | None) -> dict[str, float] | None:
    """`class_prior`: a JSON object of class label -> share (0..1, summing to 1)."""
    if raw is None:
        return None
    try:
        prior = json.loads(raw)
        ok = (
            isinstance(prior, dict)
            and prior
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
                for v in prior.values()
            )
            and abs(sum(prior.values()) - 1) < 1e-3
        )
    except ValueError:
        ok = False
    if not ok:
        raise HTTPException(
            422,
            f"class_prior {raw[:80]!r}: expected a JSON object of class label -> "
            "share, shares in [0, 1] summing to 1",
        )
    return {str(k): float(v) for k, v in prior.items()}


def _device_dict(d: Device) -> dict:
    return {
        "id": d.id,
        "profile": d.profile,
        "cohort": d.cohort,
        "labels": d.labels,
        "current_version": d.current_version,
        "slot": d.slot,
        "health": d.health,
        "failed_version": d.failed_version,
        "last_error": d.last_error,
        "last_seen": d.last_seen.isoformat() if d.last_seen else None,
    }


def _model_dict(m: Model) -> dict:
    return {
        "version": m.version,
        "filename": m.filename,
        "sha256": m.sha256,
        "size": m.size,
        "variant": m.variant,
        "profiles": m.profiles,
        "class_prior": m.class_prior,
    }


def _rollout_dict(r: Rollout) -> dict:
    return {
        "id": r.id,
        "version": r.version,
        "from_version": r.from_version,
        "state": r.state,
        "stage": r.stage,
        "started_at": r.started_at.isoformat(),
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "reason": r.reason,
        "cause": r.cause,
        "events": r.events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    settings = get_settings()
    parser.add_argument(
        "--database-url",
        default=settings.fleet_database_url,
        help="SQLAlchemy URL (default: EDGELOOP_FLEET_DATABASE_URL, else SQLite in "
        "the state folder), e.g. postgresql+psycopg://user:pass@host:5432/fleet",
    )
    args = parser.parse_args()
    if settings.fleet_admin_token is None or settings.fleet_enroll_key is None:
        parser.error(
            "EDGELOOP_FLEET_ADMIN_TOKEN and EDGELOOP_FLEET_ENROLL_KEY must be set"
        )
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("tuf").setLevel(logging.WARNING)  # "no signature" while editing
    try:
        app = create_app(
            args.state_dir,
            load_params(args.params).fleet,
            database_url=args.database_url,
            admin_token=settings.fleet_admin_token.get_secret_value(),
            enroll_key=settings.fleet_enroll_key.get_secret_value(),
        )
    except (ArgumentError, OperationalError) as error:
        url = database_url_for(args.state_dir, args.database_url)
        shown = make_url(url).render_as_string(hide_password=True)
        parser.error(
            f"fleet database {shown} (EDGELOOP_FLEET_DATABASE_URL): "
            f"{str(getattr(error, 'orig', None) or error).strip().splitlines()[0]}"
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
