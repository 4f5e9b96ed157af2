"""The admin API (the admin bearer token on every route): devices, fleet summary,
telemetry, cohorts, model upload, rollouts (start, pause, resume, abort, rollback)
and retarget."""

# No `from __future__ import annotations`: FastAPI reads the Annotated aliases.

import hashlib
import json
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as ApiPath
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select

from edge_fleet.db import (
    Device,
    EnrollmentCode,
    Model,
    Rollout,
    Telemetry,
    TelemetryWindow,
    now,
)
from edge_fleet.server.deps import DB, Fleet, admin, invalid, token_hash
from edge_fleet.server.schemas import (
    MAX_FEATURES,
    DeviceView,
    EnrollmentCodeIssued,
    EnrollmentCodeRequest,
    FleetSummary,
    ModelView,
    NewToken,
    Retargeted,
    RolloutRequest,
    RolloutStarted,
    RolloutView,
    StartRollout,
    TelemetryView,
    TelemetryWindowView,
    VersionCount,
)
from stack.contracts import ACTIVE_ROLLOUT_STATES

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(admin)])


# List endpoints answer at most this many rows a page.
MAX_PAGE = 10_000
Page = Annotated[int, Query(ge=1, le=MAX_PAGE)]
# Within a 32-bit database integer (a larger one is an OverflowError in the driver).
MAX_ID = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
RolloutId = Annotated[int, ApiPath(ge=1, le=MAX_ID)]
CohortName = Annotated[str | None, Query(max_length=64)]


@router.get("/devices")
def devices(
    session: DB, cohort: CohortName = None, limit: Page = MAX_PAGE, offset: Offset = 0
) -> list[DeviceView]:
    """The enrolled devices by id, a page at a time."""
    query = select(Device).order_by(Device.id).limit(limit).offset(offset)
    if cohort:
        query = query.where(Device.cohort == cohort)
    return [DeviceView.model_validate(d) for d in session.scalars(query)]


@router.post("/enrollment-codes", status_code=201)
def enrollment_code(body: EnrollmentCodeRequest, session: DB) -> EnrollmentCodeIssued:
    """A code for one device (bound to its id) or a batch of `devices`, of the
    profiles and cohorts it lists; shown in this answer only."""
    code = secrets.token_urlsafe(24)
    row = EnrollmentCode(
        code_sha256=token_hash(code),
        device_id=body.device_id,
        profiles=body.profiles,
        cohorts=body.cohorts,
        max_devices=body.devices,
        used=0,
        expires_at=now() + timedelta(seconds=body.expires_in_s),
    )
    session.add(row)
    session.commit()
    return EnrollmentCodeIssued(
        id=row.id,
        code=code,
        device_id=row.device_id,
        profiles=row.profiles,
        cohorts=row.cohorts,
        devices=row.max_devices,
        expires_at=row.expires_at,
    )


DeviceId = Annotated[str, ApiPath(min_length=1, max_length=128)]


def enrolled(session: DB, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(404, f"device {device_id!r} is not enrolled")
    return device


@router.post("/devices/{device_id}/revoke")
def revoke(device_id: DeviceId, session: DB) -> DeviceView:
    """The device's token stops working at once (401); its record and telemetry
    stay. Delete it to let the id enroll again."""
    device = enrolled(session, device_id)
    device.token_sha256 = f"revoked:{secrets.token_hex(16)}"
    device.revoked_at = now()
    session.commit()
    return DeviceView.model_validate(device)


@router.post("/devices/{device_id}/token")
def rotate_token(device_id: DeviceId, session: DB) -> NewToken:
    """A new token for the device (the old one stops working), for an operator to
    put on it; a revoked device is enabled again with it."""
    device = enrolled(session, device_id)
    token = secrets.token_urlsafe(32)
    device.token_sha256, device.revoked_at = token_hash(token), None
    session.commit()
    return NewToken(device_id=device_id, token=token)


@router.delete("/devices/{device_id}", status_code=204)
def delete_device(device_id: DeviceId, session: DB) -> Response:
    """The device and its telemetry are removed; its id may enroll again."""
    device = enrolled(session, device_id)
    session.execute(sa_delete(Telemetry).where(Telemetry.device_id == device_id))
    session.delete(device)
    session.commit()
    return Response(status_code=204)


@router.get("/fleet")
def summary(session: DB, fleet: Fleet) -> FleetSummary:
    rows = session.execute(
        select(Device.current_version, Device.health, func.count()).group_by(
            Device.current_version, Device.health
        )
    ).all()
    active = session.scalar(
        select(Rollout).where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
    )
    last = session.scalar(select(Rollout).order_by(Rollout.id.desc()))
    return FleetSummary(
        devices=sum(r[2] for r in rows),
        by_version=[VersionCount(version=v, health=h, devices=n) for v, h, n in rows],
        channels=fleet.repo.channels(),
        active_rollout=view(active, fleet),
        last_rollout=view(last, fleet),
    )


@router.get("/telemetry")
def telemetry(
    session: DB, cohort: CohortName = None, limit: Page = 100
) -> list[TelemetryView]:
    """The most recent telemetry reports (of one cohort), newest first."""
    query = select(Telemetry).order_by(Telemetry.id.desc()).limit(limit)
    if cohort:
        query = query.where(Telemetry.cohort == cohort)
    return [TelemetryView.model_validate(t) for t in session.scalars(query)]


@router.get("/telemetry/windows")
def telemetry_windows(
    session: DB, cohort: CohortName = None, limit: Page = 100
) -> list[TelemetryWindowView]:
    """Reports past fleet.telemetry_retention_s, summarised per device, version
    and window; newest first."""
    query = (
        select(TelemetryWindow)
        .order_by(TelemetryWindow.window_start.desc(), TelemetryWindow.id.desc())
        .limit(limit)
    )
    if cohort:
        query = query.where(TelemetryWindow.cohort == cohort)
    return [TelemetryWindowView.model_validate(t) for t in session.scalars(query)]


@router.get("/cohorts")
def cohorts(session: DB) -> list[str]:
    return list(
        session.scalars(select(Device.cohort).distinct().order_by(Device.cohort))
    )


@router.put("/models/{version}", status_code=201)
async def upload(
    version: Annotated[str, ApiPath(max_length=32, pattern=r"^[A-Za-z0-9._-]+$")],
    request: Request,
    fleet: Fleet,
    *,
    model: Annotated[str, Query(min_length=1, max_length=256)],
    variant: Annotated[str, Query(min_length=1, max_length=64)],
    filename: Annotated[str, Query(min_length=1, max_length=128)],
    profiles: Annotated[str, Query(max_length=1024)],
    features: Annotated[int, Query(ge=1, le=MAX_FEATURES)],
    class_prior: Annotated[str | None, Query(max_length=65536)] = None,
) -> ModelView:
    """The model file as the body (at most fleet.max_model_bytes), a version of the
    registered model this fleet runs taking `features` inputs (its devices'
    telemetry is checked against it); the same version again with the same
    content is answered with the stored one, with other content refused (409)."""
    if model != fleet.model_name:
        raise HTTPException(
            409,
            f"this fleet runs registered model {fleet.model_name!r} "
            f"(registry.model_name), not {model!r}",
        )
    data = await request.body()
    if not data:
        raise invalid("body", "file", "expected the model file as the request body")
    prior = parse_class_prior(class_prior)
    if Path(filename).name != filename or not filename:
        raise invalid("query", "filename", f"{filename!r}: expected a bare name")
    digest = hashlib.sha256(data).hexdigest()
    blob = fleet.state_dir / "models" / f"{digest}-{filename}"
    with fleet.sessions() as session:
        existing = session.get(Model, version)
        if existing is not None:
            if existing.sha256 != digest:
                raise HTTPException(
                    409, f"model version {version} exists with other content"
                )
            return ModelView.model_validate(existing)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        model = Model(
            version=version,
            model_name=fleet.model_name,
            filename=filename,
            sha256=digest,
            size=len(data),
            variant=variant,
            profiles=[p for p in profiles.split(",") if p],
            blob=str(blob),
            class_prior=prior,
            features=features,
        )
        session.add(model)
        session.commit()
        return ModelView.model_validate(model)


@router.post("/rollouts", status_code=201)
def start_rollout(
    body: StartRollout, session: DB, fleet: Fleet, response: Response
) -> RolloutStarted:
    """201 when a rollout started; 200 for a no-op (the version is already
    rolling out, or already stable), which says so in `outcome`."""
    with fleet.publish_lock:
        started = fleet.controller.start(
            session, body.version, body.reason, supersede=body.supersede
        )
    if started.outcome != "started":
        response.status_code = 200
    return RolloutStarted(
        outcome=started.outcome,
        detail=started.detail,
        rollout=view(started.rollout, fleet),
        superseded=view(started.superseded, fleet),
    )


@router.get("/rollouts")
def rollouts(session: DB, fleet: Fleet, limit: Page = 1000) -> list[RolloutView]:
    """The rollouts, newest first."""
    query = select(Rollout).order_by(Rollout.id.desc()).limit(limit)
    return [RolloutView.of(r, fleet.controller) for r in session.scalars(query)]


def view(rollout: Rollout | None, fleet: Fleet) -> RolloutView | None:
    return RolloutView.of(rollout, fleet.controller) if rollout else None


def found_rollout(session: DB, rollout_id: int) -> Rollout:
    found = session.get(Rollout, rollout_id)
    if found is None:
        raise HTTPException(404, f"rollout {rollout_id} does not exist")
    return found


@router.get("/rollouts/{rollout_id}")
def rollout(rollout_id: RolloutId, session: DB, fleet: Fleet) -> RolloutView:
    return RolloutView.of(found_rollout(session, rollout_id), fleet.controller)


@router.post("/rollouts/{rollout_id}/{action}")
def rollout_action(
    rollout_id: RolloutId,
    action: Literal["pause", "resume", "abort", "rollback"],
    session: DB,
    fleet: Fleet,
) -> RolloutView:
    found = found_rollout(session, rollout_id)
    with fleet.publish_lock:
        changed = fleet.controller.set_state(session, found, action)
    return RolloutView.of(changed, fleet.controller)


@router.post("/retarget")
def retarget(body: RolloutRequest, session: DB, fleet: Fleet) -> Retargeted:
    with fleet.publish_lock:
        stopped = fleet.controller.retarget(
            session, body.version, body.reason or "retarget"
        )
    return Retargeted(
        stable=body.version,
        rolled_back=view(stopped, fleet),
    )


def parse_class_prior(raw: str | None) -> dict[str, float] | None:
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
        raise invalid(
            "query",
            "class_prior",
            f"{raw[:80]!r}: expected a JSON object of class label -> share, shares "
            "in [0, 1] summing to 1",
        )
    return {str(k): float(v) for k, v in prior.items()}
