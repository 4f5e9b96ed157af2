"""The admin API (the admin bearer token on every route): devices, fleet summary,
telemetry, cohorts, rollouts (start, pause, resume, abort, rollback) and retarget;
model upload is in models_api.py."""

# No `from __future__ import annotations`: FastAPI reads the Annotated aliases.

import secrets
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi import Path as ApiPath
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select

from edge_fleet import ledger
from edge_fleet.db import (
    CohortCheck,
    Device,
    EnrollmentCode,
    Rollout,
    Telemetry,
    TelemetryWindow,
    aware,
    now,
)
from edge_fleet.server.deps import DB, Fleet, admin, invalid, token_hash
from edge_fleet.server.schemas import (
    NAME,
    CohortCheckReport,
    CohortCheckView,
    DeviceView,
    EnrollmentCodeIssued,
    EnrollmentCodeRequest,
    FleetSummary,
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
from stack.answers import answers
from stack.contracts import ACTIVE_ROLLOUT_STATES

# Every admin route: the admin token, and a body bounded before it is read.
ADMIN = answers(
    s400="Content-Length is not a number",
    s401="no admin token, or a wrong one",
    s413="body over fleet.max_request_bytes",
)
router = APIRouter(prefix="/v1/admin", dependencies=[Depends(admin)], responses=ADMIN)
NOT_ENROLLED = answers(s404="no device of that id is enrolled")
NO_ROLLOUT = answers(s404="no rollout of that id")


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
    code = new_enrollment_code()
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


def new_enrollment_code() -> str:
    """A one-time code for `edgeloop-agent enroll --code CODE`: URL-safe, and never
    beginning with "-" (a command line reads such a word as an option)."""
    while True:
        code = secrets.token_urlsafe(24)
        if not code.startswith("-"):
            return code


DeviceId = Annotated[str, ApiPath(min_length=1, max_length=128)]


def enrolled(session: DB, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(404, f"device {device_id!r} is not enrolled")
    return device


@router.post("/devices/{device_id}/revoke", responses=NOT_ENROLLED)
def revoke(device_id: DeviceId, session: DB) -> DeviceView:
    """The device's token stops working at once (401); its record and telemetry
    stay. Delete it to let the id enroll again."""
    device = enrolled(session, device_id)
    device.token_sha256 = f"revoked:{secrets.token_hex(16)}"
    device.revoked_at = now()
    session.commit()
    return DeviceView.model_validate(device)


@router.post("/devices/{device_id}/token", responses=NOT_ENROLLED)
def rotate_token(device_id: DeviceId, session: DB) -> NewToken:
    """A new token for the device (the old one stops working), for an operator to
    put on it; a revoked device is enabled again with it."""
    device = enrolled(session, device_id)
    token = secrets.token_urlsafe(32)
    device.token_sha256, device.revoked_at = token_hash(token), None
    session.commit()
    return NewToken(device_id=device_id, token=token)


@router.delete("/devices/{device_id}", status_code=204, responses=NOT_ENROLLED)
def delete_device(device_id: DeviceId, session: DB) -> Response:
    """The device and its telemetry are removed; its id may enroll again."""
    device = enrolled(session, device_id)
    session.execute(sa_delete(Telemetry).where(Telemetry.device_id == device_id))
    session.delete(device)
    session.commit()
    return Response(status_code=204)


@router.get("/devices/{device_id}/ledger", responses=NOT_ENROLLED)
def device_ledger(
    device_id: DeviceId,
    session: DB,
    fleet: Fleet,
    at: Annotated[datetime | None, Query()] = None,
) -> dict:
    """Which version the device ran at `at` (default: now) and why: the rollout
    and stage that took it in (or the rollback that brought it back), the gate and
    its seal, the training run, the drift event that started it, the data version
    (edge_fleet/ledger.py). `chain` is the same as lines."""
    device = enrolled(session, device_id)
    try:
        when = ledger.in_utc(at) if at is not None else None
    except ValueError as error:
        raise invalid("query", "at", str(error)) from None
    explained = ledger.explain(session, fleet.controller.plan, device, when)
    return explained | {"chain": ledger.chain(explained)}


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
        throttled=fleet.limiter.over_budget(),
    )


@router.get("/telemetry")
def telemetry(
    session: DB,
    cohort: CohortName = None,
    limit: Page = 100,
    per_device: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
) -> list[TelemetryView]:
    """The most recent telemetry reports (of one cohort), newest first; with
    `per_device`, at most that many of each device's newest (a drift window in
    which one device is one vote: monitoring.max_reports_per_device)."""
    query = select(Telemetry)
    if cohort:
        query = query.where(Telemetry.cohort == cohort)
    if per_device is not None:
        newest = func.row_number().over(
            partition_by=Telemetry.device_id, order_by=Telemetry.id.desc()
        )
        ranked = query.add_columns(newest.label("rank")).subquery()
        query = select(Telemetry).join(ranked, Telemetry.id == ranked.c.id)
        query = query.where(ranked.c.rank <= per_device)
    query = query.order_by(Telemetry.id.desc()).limit(limit)
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


# A cohort's newest drift checks kept (the console's trend); older ones are deleted.
COHORT_CHECKS_KEPT = 500
CohortPath = Annotated[str, ApiPath(min_length=1, max_length=64, pattern=NAME)]


@router.post("/cohorts/{cohort}/checks", status_code=201)
def report_cohort_check(
    cohort: CohortPath, body: CohortCheckReport, session: DB
) -> CohortCheckView:
    """The monitor's drift check of a cohort at this pass (flows/monitor.py)."""
    row = CohortCheck(
        cohort=cohort,
        checked_at=now(),
        drifted=body.drifted,
        flagged=body.flagged,
        trigger=body.trigger,
        drift_share=body.drift_share,
        report=body.model_dump(mode="json"),
    )
    session.add(row)
    session.flush()
    kept = (
        select(CohortCheck.id)
        .where(CohortCheck.cohort == cohort)
        .order_by(CohortCheck.id.desc())
        .limit(COHORT_CHECKS_KEPT)
        .scalar_subquery()
    )
    session.execute(
        sa_delete(CohortCheck).where(
            CohortCheck.cohort == cohort, CohortCheck.id.not_in(kept)
        )
    )
    session.commit()
    return cohort_check_view(row)


@router.get("/cohorts/{cohort}/checks")
def cohort_checks(
    cohort: CohortPath, session: DB, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[CohortCheckView]:
    """The cohort's newest drift checks first."""
    rows = session.scalars(
        select(CohortCheck)
        .where(CohortCheck.cohort == cohort)
        .order_by(CohortCheck.id.desc())
        .limit(limit)
    )
    return [cohort_check_view(r) for r in rows]


def cohort_check_view(row: CohortCheck) -> CohortCheckView:
    return CohortCheckView(
        **row.report, id=row.id, cohort=row.cohort, checked_at=aware(row.checked_at)
    )


@router.post(
    "/rollouts",
    status_code=201,
    responses={
        200: {
            "model": RolloutStarted,
            "description": "nothing to do: the "
            "version is already rolling out or stable (`outcome` says which)",
        }
    }
    | answers(
        s404="the version was not uploaded",
        s409="another version's rollout is active (abort it, or supersede it)",
    ),
)
def start_rollout(
    body: StartRollout, session: DB, fleet: Fleet, response: Response
) -> RolloutStarted:
    """201 when a rollout started; 200 for a no-op (the version is already
    rolling out, or already stable), which says so in `outcome`."""
    with fleet.coordinator.publishing():
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


@router.get("/rollouts/{rollout_id}", responses=NO_ROLLOUT)
def rollout(rollout_id: RolloutId, session: DB, fleet: Fleet) -> RolloutView:
    return RolloutView.of(found_rollout(session, rollout_id), fleet.controller)


@router.post(
    "/rollouts/{rollout_id}/{action}",
    responses=NO_ROLLOUT | answers(s409="the rollout's state does not allow it"),
)
def rollout_action(
    rollout_id: RolloutId,
    action: Literal["pause", "resume", "abort", "rollback"],
    session: DB,
    fleet: Fleet,
) -> RolloutView:
    found = found_rollout(session, rollout_id)
    with fleet.coordinator.publishing():
        changed = fleet.controller.set_state(session, found, action)
    return RolloutView.of(changed, fleet.controller)


@router.post(
    "/retarget",
    responses=answers(s404="the version was not uploaded"),
)
def retarget(body: RolloutRequest, session: DB, fleet: Fleet) -> Retargeted:
    with fleet.coordinator.publishing():
        stopped = fleet.controller.retarget(
            session, body.version, body.reason or "retarget"
        )
    return Retargeted(
        stable=body.version,
        rolled_back=view(stopped, fleet),
    )
