"""The device API: enroll, check in, read its own state, fetch TUF metadata and
targets. Every route but enrollment takes the device's bearer token.

The TUF routes (`tuf_router`) are the embedded default's; in the production shape
a static server serves the same files from the state folder and asks
`GET /v1/auth/device` whether a request's token is a device's (nginx's
auth_request: edge_fleet/production/nginx.conf.template)."""

# No `from __future__ import annotations`: FastAPI reads the Annotated aliases.

import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edge_fleet.db import Device, EnrollmentCode, Telemetry, aware, now
from edge_fleet.device import audio
from edge_fleet.server.checkin_limit import retry_after
from edge_fleet.server.deps import (
    DB,
    Auth,
    Fleet,
    device_of_token,
    mismatch,
    own_device,
    token_hash,
)
from edge_fleet.server.schemas import (
    CheckedIn,
    CheckIn,
    DeviceView,
    Enrolled,
    Enrollment,
    TelemetryBatch,
)
from stack.answers import answers

router = APIRouter()
tuf_router = APIRouter()

TOKEN = "no device token, or not one this fleet issued (revoked included)"
OTHER = "the token belongs to another device than the path names"
BODY = answers(
    s400="Content-Length is not a number",
    s413="body over fleet.max_request_bytes (check-ins: fleet.max_telemetry_bytes)",
)


@router.post(
    "/v1/enroll",
    status_code=201,
    responses=BODY
    | answers(
        s401="no enrollment code, or one unknown, expired or used up",
        s403="the code does not allow this device id, profile or cohort",
        s409="the device id is already enrolled",
    ),
)
def enroll(
    body: Enrollment,
    fleet: Fleet,
    x_enroll_code: Annotated[str | None, Header()] = None,
) -> Enrolled:
    """With a code an admin issued (header X-Enroll-Code): the device gets its own
    token (stored hashed) if the code allows its id, profile and cohort and is
    neither expired nor used up."""
    if not x_enroll_code:
        raise HTTPException(401, "enrollment code required (header X-Enroll-Code)")
    with fleet.sessions() as session:
        code = session.scalar(
            select(EnrollmentCode)
            .where(EnrollmentCode.code_sha256 == token_hash(x_enroll_code))
            .with_for_update()
        )
        check_code(code, body)
        assert code is not None
        if session.get(Device, body.device_id) is not None:
            raise HTTPException(409, f"device {body.device_id!r} is already enrolled")
        code.used += 1
        token = secrets.token_urlsafe(32)
        session.add(
            Device(
                id=body.device_id,
                token_sha256=token_hash(token),
                profile=body.profile,
                cohort=body.cohort,
                labels=body.labels,
            )
        )
        try:
            session.commit()
        except IntegrityError:  # the same id enrolled on another replica meanwhile
            raise HTTPException(
                409, f"device {body.device_id!r} is already enrolled"
            ) from None
    return Enrolled(device_id=body.device_id, token=token, poll_s=fleet.cfg.poll_s)


def check_code(code: EnrollmentCode | None, body: Enrollment) -> None:
    if code is None:
        raise HTTPException(401, "unknown enrollment code (header X-Enroll-Code)")
    if aware(code.expires_at) <= now():
        raise HTTPException(401, f"enrollment code {code.id} expired")
    if code.used >= code.max_devices:
        raise HTTPException(
            401, f"enrollment code {code.id} is used up ({code.max_devices} devices)"
        )
    if code.device_id is not None and code.device_id != body.device_id:
        raise HTTPException(
            403, f"enrollment code {code.id} enrolls device {code.device_id!r} only"
        )
    for what, value, allowed in (
        ("profile", body.profile, code.profiles),
        ("cohort", body.cohort, code.cohorts),
    ):
        if value not in allowed:
            raise HTTPException(
                403,
                f"{what} {value!r}: enrollment code {code.id} allows "
                f"{', '.join(allowed)}",
            )


@router.post(
    "/v1/devices/{device_id}/checkin",
    responses=BODY
    | answers(
        s401=TOKEN,
        s403=OTHER,
        s409="the report does not fit the model version it names (a version this "
        "fleet does not have, another feature count, classes it does not predict, "
        "more inferences than fleet.telemetry_batch); nothing is stored",
        s429="over the device's check-in budget (fleet.checkin_burst, "
        "fleet.checkin_min_interval_s); Retry-After says when to come back",
    ),
)
def checkin(
    device_id: str, body: CheckIn, fleet: Fleet, authorization: Auth = None
) -> CheckedIn:
    """The device's health and, when it has one, a telemetry batch (its size
    bounded before it is read: fleet.max_telemetry_bytes, see app.py)."""
    with fleet.sessions() as session:
        device = own_device(device_id, session, authorization)
        wait = fleet.limiter.take(device.id)
        if wait is not None:
            raise HTTPException(
                429,
                f"device {device.id!r} checks in too often: at most "
                f"{fleet.cfg.checkin_burst} at once, then one every "
                f"{fleet.cfg.checkin_interval_s:g} s (fleet.checkin_burst, "
                "fleet.checkin_min_interval_s)",
                headers={"Retry-After": retry_after(wait)},
            )
        if body.telemetry is not None:
            check_report(
                body.telemetry,
                fleet.model_features(session, body.telemetry.version),
                fleet.cfg.telemetry_batch,
                fleet.model_classes(session, body.telemetry.version),
            )
        device.current_version = body.current_version
        device.slot = body.slot
        device.health = body.health
        device.last_seen = now()
        device.last_error = body.error
        if body.failed_version is not None:
            device.failed_version = body.failed_version
        if body.telemetry is not None:
            keep_samples = device.cohort in set(fleet.cfg.sample_cohorts)
            session.add(telemetry_row(device, body.telemetry, keep_samples))
        session.commit()
    return CheckedIn(
        poll_s=fleet.cfg.poll_s, timestamp_version=fleet.repo.timestamp().version
    )


def check_report(
    batch: TelemetryBatch,
    features: int | None,
    batch_size: int,
    classes: frozenset[str] | None = None,
) -> None:
    """A report must describe the model version it names (`features`, `classes`:
    what that version takes and predicts, from FleetState): its feature count, its
    predicted classes, at most one telemetry batch of inferences. 409, and nothing
    stored, otherwise (one device's bad report would otherwise break every drift
    check that reads it): the report is well formed (the schema's 422 is for one
    that is not) but does not fit what this fleet has for that version."""
    unknown = sorted(set(batch.class_counts) - classes) if classes else []
    if unknown:
        raise mismatch(
            "telemetry.class_counts",
            f"{len(unknown)} classes v{batch.version} does not predict (first "
            f"{unknown[0][:40]!r}): expected its class labels or output positions",
        )
    width = batch.feature_stats.features
    if batch.feature_stats.summary == audio.SUMMARY:
        if features is not None and features != len(audio.feature_names()):
            raise mismatch(
                "telemetry.feature_stats.summary",
                f"mfcc: v{batch.version} takes {features} features, not MFCC clips",
            )
        if width != len(audio.SUMMARY_NAMES):
            raise mismatch(
                "telemetry.feature_stats",
                f"{width} summary values: expected {len(audio.SUMMARY_NAMES)} per "
                f"clip ({', '.join(audio.SUMMARY_NAMES)})",
            )
    elif features is not None and width != features:
        raise mismatch(
            "telemetry.feature_stats",
            f"{width} features: v{batch.version} takes {features}",
        )
    if batch.inferences > batch_size:
        raise mismatch(
            "telemetry.inferences",
            f"{batch.inferences}: expected at most fleet.telemetry_batch "
            f"({batch_size}) per report",
        )


def telemetry_row(device: Device, batch: TelemetryBatch, keep_samples: bool):
    return Telemetry(
        device_id=device.id,
        cohort=device.cohort,
        version=batch.version,
        inferences=batch.inferences,
        errors=batch.errors,
        latency_ms_median=batch.latency_ms_median,
        latency_ms_p95=batch.latency_ms_p95,
        confidence_mean=batch.confidence_mean,
        class_counts=batch.class_counts,
        feature_stats=batch.feature_stats.model_dump(exclude_none=True),
        samples=batch.samples if keep_samples else None,
        benchmark=batch.benchmark.model_dump() if batch.benchmark else None,
    )


@router.get("/v1/devices/{device_id}", responses=answers(s401=TOKEN, s403=OTHER))
def device_state(device_id: str, session: DB, authorization: Auth = None) -> DeviceView:
    return DeviceView.model_validate(own_device(device_id, session, authorization))


def tuf_file(
    base: Path, name: str, session: Session, authorization: str | None
) -> FileResponse:
    device_of_token(session, authorization)
    path = (base / name).resolve()
    if not path.is_relative_to(base.resolve()) or not path.is_file():
        raise HTTPException(404, f"{name} not found")
    return FileResponse(path)  # Starlette answers Range requests (206)


TUF_FILE = answers(
    s401=TOKEN,
    s404="no such file in the repository",
    s416="the Range asked for lies past the file's end",
)


@router.get(
    "/v1/auth/device",
    status_code=204,
    responses=answers(s401=TOKEN),
)
def device_token(session: DB, authorization: Auth = None) -> Response:
    """204 when the bearer token is an enrolled device's (a static server asks
    this before it serves a TUF file)."""
    device_of_token(session, authorization)
    return Response(status_code=204)


@tuf_router.get("/tuf/metadata/{name}", responses=TUF_FILE)
def tuf_metadata(
    name: str, session: DB, fleet: Fleet, authorization: Auth = None
) -> FileResponse:
    return tuf_file(fleet.repo.metadata_dir, name, session, authorization)


@tuf_router.get("/tuf/targets/{name:path}", responses=TUF_FILE)
def tuf_target(
    name: str, session: DB, fleet: Fleet, authorization: Auth = None
) -> FileResponse:
    return tuf_file(fleet.repo.targets_dir, name, session, authorization)
