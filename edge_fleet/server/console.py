"""The fleet console (`/ui`): server-rendered pages (Jinja2) for operators, with
htmx for the parts that refresh themselves (a rollout's stages while it runs) and
to ask before an action that sends devices back; every page and action works
without JavaScript as plain links and forms. Bootstrap 4.5 (from the XStatic
package) lays it out for a laptop and a phone.

Log in with the fleet's admin token: the console keeps a signed session cookie
(HttpOnly, SameSite=Strict, Path=/ui; signed with a key derived from the admin
token, so every replica accepts it and rotating the token ends every session).
Every action is a POST carrying the session's CSRF token (a form field, or the
X-CSRF-Token header htmx sends), and a request from another origin is refused.
No token ever travels in a URL."""

# No `from __future__ import annotations`: FastAPI reads the Annotated aliases.

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

import js_lib_htmx
import xstatic.pkg.bootstrap
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge_fleet import ledger
from edge_fleet.controller import assignment
from edge_fleet.db import (
    CohortCheck,
    Device,
    EnrollmentCode,
    Model,
    Rollout,
    Telemetry,
    TelemetryWindow,
    aware,
    now,
)
from edge_fleet.device.scope import in_scope
from edge_fleet.server import admin_api
from edge_fleet.server.deps import DB, Fleet, FleetState, same_secret
from edge_fleet.server.schemas import EnrollmentCodeRequest
from stack.contracts import ACTIVE_ROLLOUT_STATES, RolloutState

COOKIE = "edgeloop_console"
SESSION_S = 8 * 3600  # a session lasts a working day
PAGE = 50  # devices on one page
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["ACTIVE"] = ACTIVE_ROLLOUT_STATES


class LoginNeeded(Exception):
    """A page asked for without a session: answered with the login page's link."""


@dataclass(frozen=True)
class ConsoleSession:
    csrf: str


def _signer(fleet: FleetState) -> URLSafeTimedSerializer:
    key = hmac.new(
        fleet.admin_token.encode(), b"edgeloop fleet console session", hashlib.sha256
    ).digest()
    return URLSafeTimedSerializer(key, salt="edgeloop-fleet-console")


def current_session(request: Request, fleet: FleetState) -> ConsoleSession | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _signer(fleet).loads(raw, max_age=SESSION_S)
    except BadSignature:
        return None
    return (
        ConsoleSession(csrf=str(data.get("csrf", "")))
        if isinstance(data, dict)
        else None
    )


def viewer(request: Request, fleet: Fleet) -> ConsoleSession:
    """A page's reader: the session, else to the login page."""
    found = current_session(request, fleet)
    if found is None:
        raise LoginNeeded
    return found


def _same_origin(request: Request) -> bool:
    """A browser names the page a POST came from (Origin); it must be this site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def actor(request: Request, fleet: Fleet) -> ConsoleSession:
    """An action's sender: a session, its CSRF token, this site's origin (403
    otherwise, never a redirect: a refused action changes nothing)."""
    found = current_session(request, fleet)
    if found is None:
        raise HTTPException(403, "no console session: log in at /ui/login")
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        sent = str((await request.form()).get("csrf", ""))
    if not found.csrf or not hmac.compare_digest(sent.encode(), found.csrf.encode()):
        raise HTTPException(
            403, "the form's CSRF token is missing or not this session's"
        )
    if not _same_origin(request):
        raise HTTPException(403, "an action from another site is refused")
    return found


Viewer = Annotated[ConsoleSession, Depends(viewer)]
Actor = Annotated[ConsoleSession, Depends(actor)]
router = APIRouter(prefix="/ui", include_in_schema=False)


def page(
    request: Request, name: str, session: ConsoleSession | None, **context
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"csrf": session.csrf if session else ""} | context,
        headers=PAGE_HEADERS,
    )


# Every page: its scripts and styles from this server only (inline style
# attributes aside), never framed by another site, not cached by a shared cache.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def done(request: Request, where: str) -> Response:
    """After an action: htmx follows HX-Location, a plain form the redirect."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Location": where})
    return RedirectResponse(where, status_code=303)


# -- logging in ------------------------------------------------------------------


def _next(target: str | None) -> str:
    """Only a path of this console (no other site, no scheme)."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui/rollouts"


@router.get("/login")
def login_page(request: Request, fleet: Fleet, next: str | None = None) -> Response:
    return page(request, "login.html", None, next=_next(next), error=None)


@router.post("/login")
def login(
    request: Request,
    fleet: Fleet,
    token: Annotated[str, Form(max_length=512)],
    next: Annotated[str, Form(max_length=512)] = "/ui/rollouts",
) -> Response:
    if not _same_origin(request):
        raise HTTPException(403, "a login from another site is refused")
    if not same_secret(token, fleet.admin_token):
        answer = page(
            request,
            "login.html",
            None,
            next=_next(next),
            error="not the fleet's admin token",
        )
        answer.status_code = 401
        return answer
    answer = RedirectResponse(_next(next), status_code=303)
    answer.set_cookie(
        COOKIE,
        _signer(fleet).dumps({"csrf": secrets.token_urlsafe(24)}),
        max_age=SESSION_S,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@router.post("/logout")
def logout(_: Actor) -> Response:
    answer = RedirectResponse("/ui/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/ui")
    return answer


@router.get("")
@router.get("/")
def home(_: Viewer) -> Response:
    return RedirectResponse("/ui/rollouts", status_code=303)


# -- rollouts --------------------------------------------------------------------


@router.get("/rollouts")
def rollouts(request: Request, session: DB, fleet: Fleet, me: Viewer) -> Response:
    rows = session.scalars(select(Rollout).order_by(Rollout.id.desc()).limit(100))
    plan = fleet.controller.plan
    return page(
        request,
        "rollouts.html",
        me,
        rollouts=[(r, plan[min(r.stage, len(plan) - 1)].name) for r in rows],
        channels=fleet.repo.channels(),
    )


@dataclass(frozen=True)
class StageProgress:
    name: str
    scope: str
    status: str  # passed | current | pending | stopped
    asked: int
    installed: int
    healthy: int
    failed: int
    events: list[dict]


def stage_progress(
    session: Session, fleet: FleetState, rollout: Rollout
) -> list[StageProgress]:
    """Each stage's devices (those its scope takes in), and of them how many run
    the version, run it healthy, or failed to install it; with its events."""
    model = session.get(Model, rollout.version)
    devices = session.execute(
        select(
            Device.id,
            Device.cohort,
            Device.profile,
            Device.current_version,
            Device.failed_version,
            Device.health,
        ).where(Device.revoked_at.is_(None))
    ).all()
    progress = []
    for index, stage in enumerate(fleet.controller.plan):
        scope = (
            "cohort " + ", ".join(stage.cohorts)
            if stage.cohorts
            else f"{stage.percent:g}%"
        )
        if rollout.stage > index or rollout.state == RolloutState.COMPLETED.value:
            status = "passed"
        elif rollout.stage == index:
            status = "current" if rollout.state in ACTIVE_ROLLOUT_STATES else "stopped"
        else:
            status = "pending"
        members = []
        if model is not None:
            custom = assignment(model, stage, rollout.id) | {
                "profiles": model.all_profiles()
            }
            members = [
                d for d in devices if in_scope(custom, d.id, d.cohort, d.profile)
            ]
        installed = [d for d in members if d.current_version == rollout.version]
        progress.append(
            StageProgress(
                name=stage.name,
                scope=scope,
                status=status,
                asked=len(members),
                installed=len(installed),
                healthy=sum(d.health == "ok" for d in installed),
                failed=sum(d.failed_version == rollout.version for d in members),
                events=ledger.stage_events(rollout, stage.name),
            )
        )
    return progress


def found_rollout(session: Session, rollout_id: int) -> Rollout:
    found = session.get(Rollout, rollout_id)
    if found is None:
        raise HTTPException(404, f"rollout {rollout_id} does not exist")
    return found


def _rollout_context(session: Session, fleet: FleetState, rollout_id: int) -> dict:
    rollout = found_rollout(session, rollout_id)
    model = session.get(Model, rollout.version)
    return {
        "rollout": rollout,
        "stages": stage_progress(session, fleet, rollout),
        "lineage": (model.lineage or {}) if model else {},
    }


@router.get("/rollouts/{rollout_id}")
@router.get("/rollouts/{rollout_id}/body")
def rollout_page(
    rollout_id: admin_api.RolloutId,
    request: Request,
    session: DB,
    fleet: Fleet,
    me: Viewer,
) -> Response:
    """The rollout's page; `/body`: the part of it that refreshes itself while
    the rollout is active."""
    part = request.url.path.endswith("/body")
    return page(
        request,
        "_rollout_body.html" if part else "rollout.html",
        me,
        **_rollout_context(session, fleet, rollout_id),
    )


@router.post("/rollouts/{rollout_id}/{action}")
def rollout_action(
    rollout_id: admin_api.RolloutId,
    action: Literal["pause", "resume", "abort", "rollback"],
    request: Request,
    session: DB,
    fleet: Fleet,
    _: Actor,
) -> Response:
    admin_api.rollout_action(rollout_id, action, session, fleet)
    return done(request, f"/ui/rollouts/{rollout_id}")


# -- devices ---------------------------------------------------------------------

Filter = Annotated[str | None, Query(max_length=128)]


@router.get("/devices")
def devices(  # noqa: PLR0917 - the page's filters
    request: Request,
    session: DB,
    me: Viewer,
    version: Filter = None,
    profile: Filter = None,
    cohort: Filter = None,
    health: Filter = None,
    seen: Annotated[Literal["", "within", "not_within"], Query()] = "",
    minutes: Annotated[int, Query(ge=1, le=10_000_000)] = 10,
    q: Filter = None,
    page_no: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    """The devices, filtered, a page at a time (each filter an indexed column)."""
    where = []
    if version:
        where.append(
            Device.current_version.is_(None)
            if version == "-"
            else Device.current_version == version
        )
    if profile:
        where.append(Device.profile == profile)
    if cohort:
        where.append(Device.cohort == cohort)
    if health:
        where.append(Device.health == health)
    if seen:
        since = now() - timedelta(minutes=minutes)
        where.append(
            Device.last_seen >= since
            if seen == "within"
            else (Device.last_seen < since) | Device.last_seen.is_(None)
        )
    if q:
        where.append(Device.id.startswith(q, autoescape=True))
    total = session.scalar(select(func.count()).select_from(Device).where(*where)) or 0
    rows = session.scalars(
        select(Device)
        .where(*where)
        .order_by(Device.id)
        .limit(PAGE)
        .offset((page_no - 1) * PAGE)
    ).all()
    choices = {
        "version": _distinct(session, Device.current_version),
        "profile": _distinct(session, Device.profile),
        "cohort": _distinct(session, Device.cohort),
        "health": _distinct(session, Device.health),
    }
    chosen = {
        "version": version or "",
        "profile": profile or "",
        "cohort": cohort or "",
        "health": health or "",
        "seen": seen,
        "minutes": minutes,
        "q": q or "",
    }
    query = "&".join(
        f"{k}={quote(str(v))}" for k, v in chosen.items() if v not in ("", None)
    )
    return page(
        request,
        "devices.html",
        me,
        devices=rows,
        total=total,
        page_no=page_no,
        pages=max(1, math.ceil(total / PAGE)),
        choices=choices,
        chosen=chosen,
        query=query,
    )


def _distinct(session: Session, column) -> list[str]:
    return [
        v
        for v in session.scalars(select(column).distinct().order_by(column))
        if v is not None
    ]


def found_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(404, f"device {device_id!r} is not enrolled")
    return device


def history(session: Session, device_id: str) -> list[dict]:
    """The versions the device reported, each with its first and last report,
    oldest first (rolled-up windows, then the reports still kept)."""
    rows = []
    for table, when in (
        (TelemetryWindow, TelemetryWindow.window_start),
        (Telemetry, Telemetry.received_at),
    ):
        rows += [
            {
                "version": v,
                "first": aware(first),
                "last": aware(last),
                "reports": n,
                "kept": table is Telemetry,
            }
            for v, first, last, n in session.execute(
                select(table.version, func.min(when), func.max(when), func.count())
                .where(table.device_id == device_id)
                .group_by(table.version)
                .order_by(func.min(when))
            )
        ]
    return rows


@router.get("/devices/{device_id}")
def device_page(  # noqa: PLR0917 - the page's query
    device_id: admin_api.DeviceId,
    request: Request,
    session: DB,
    fleet: Fleet,
    me: Viewer,
    at: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    when, error = None, None
    if at:
        try:
            when = ledger.in_utc(datetime.fromisoformat(at))
        except ValueError:
            error = f"{at!r}: expected an ISO 8601 time, e.g. 2026-12-07T18:00:00Z"
    return _device(
        request, session, fleet, me, device_id, when=when, at=at, error=error
    )


def _device(
    request: Request,
    session: Session,
    fleet: FleetState,
    me: ConsoleSession,
    device_id: str,
    *,
    when: datetime | None = None,
    at: str | None = None,
    error: str | None = None,
    new_token: str | None = None,
) -> Response:
    """A device's page: its record, history and ledger (as of `when`)."""
    device = found_device(session, device_id)
    explained = ledger.explain(session, fleet.controller.plan, device, when)
    return page(
        request,
        "device.html",
        me,
        device=device,
        history=history(session, device_id),
        explained=explained,
        chain=ledger.chain(explained),
        at=at or "",
        at_error=error,
        new_token=new_token,
    )


@router.post("/devices/{device_id}/revoke")
def revoke(
    device_id: admin_api.DeviceId, request: Request, session: DB, _: Actor
) -> Response:
    admin_api.revoke(device_id, session)
    return done(request, f"/ui/devices/{quote(device_id, safe='')}")


@router.post("/devices/{device_id}/token")
def rotate_token(
    device_id: admin_api.DeviceId,
    request: Request,
    session: DB,
    fleet: Fleet,
    me: Actor,
) -> Response:
    """A new token, shown on this answer only (never in a URL)."""
    token = admin_api.rotate_token(device_id, session).token
    return _device(request, session, fleet, me, device_id, new_token=token)


# -- cohorts, versions, enrollment -------------------------------------------------


@router.get("/cohorts")
def cohorts(request: Request, session: DB, me: Viewer) -> Response:
    counts: dict[str, dict] = {}
    for cohort, version, health, n in session.execute(
        select(
            Device.cohort, Device.current_version, Device.health, func.count()
        ).group_by(Device.cohort, Device.current_version, Device.health)
    ):
        row = counts.setdefault(cohort, {"devices": 0, "versions": {}, "unhealthy": 0})
        row["devices"] += n
        row["versions"][version or "-"] = row["versions"].get(version or "-", 0) + n
        row["unhealthy"] += n if health != "ok" else 0
    for cohort in {
        c for (c,) in session.execute(select(CohortCheck.cohort).distinct())
    }:
        checks = session.scalars(
            select(CohortCheck)
            .where(CohortCheck.cohort == cohort)
            .order_by(CohortCheck.id.desc())
            .limit(TREND)
        ).all()
        row = counts.setdefault(cohort, {"devices": 0, "versions": {}, "unhealthy": 0})
        row["checks"] = list(reversed(checks))  # oldest first: the trend
    for row in counts.values():
        row.setdefault("checks", [])
        row["last"] = row["checks"][-1] if row["checks"] else None
    return page(
        request, "cohorts.html", me, cohorts=sorted(counts.items()), trend=TREND
    )


TREND = 20  # drift checks drawn per cohort


@router.get("/versions")
def versions(request: Request, session: DB, fleet: Fleet, me: Viewer) -> Response:
    models = session.scalars(select(Model).order_by(Model.created_at.desc())).all()
    channels = fleet.repo.channels()
    return page(
        request,
        "versions.html",
        me,
        models=models,
        channels=sorted(channels.items()),
        stable={c.get("version") for p, c in channels.items() if "stable" in p},
    )


@router.get("/enrollment")
def enrollment(request: Request, session: DB, fleet: Fleet, me: Viewer) -> Response:
    return _enrollment_page(request, session, fleet, me, issued=None)


def _enrollment_page(request, session, fleet, me, *, issued, error=None) -> Response:
    codes = session.scalars(
        select(EnrollmentCode).order_by(EnrollmentCode.id.desc()).limit(200)
    ).all()
    return page(
        request,
        "enrollment.html",
        me,
        codes=codes,
        issued=issued,
        error=error,
        profiles=sorted(fleet.profiles),
        cohorts=fleet.cfg.cohorts,
        current=now(),
        aware=aware,
    )


@router.post("/enrollment")
def issue_code(  # noqa: PLR0917 - the form's fields
    request: Request,
    session: DB,
    fleet: Fleet,
    me: Actor,
    devices: Annotated[int, Form(ge=1, le=100_000)] = 1,
    device_id: Annotated[str, Form(max_length=128)] = "",
    profiles: Annotated[list[str] | None, Form()] = None,
    cohorts: Annotated[list[str] | None, Form()] = None,
    expires_in_h: Annotated[float, Form(gt=0, le=24 * 365)] = 24,
) -> Response:
    """A code, shown once on this answer."""
    try:
        body = EnrollmentCodeRequest(
            device_id=device_id or None,
            devices=devices,
            profiles=profiles or sorted(fleet.profiles),
            cohorts=cohorts or fleet.cfg.cohorts,
            expires_in_s=int(expires_in_h * 3600),
        )
    except ValidationError as error:
        said = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}"
            for e in error.errors()
        )
        answer = _enrollment_page(request, session, fleet, me, issued=None, error=said)
        answer.status_code = 422
        return answer
    issued = admin_api.enrollment_code(body, session)
    return _enrollment_page(request, session, fleet, me, issued=issued)


@router.post("/enrollment/{code_id}/expire")
def expire_code(
    code_id: Annotated[int, admin_api.ApiPath(ge=1, le=admin_api.MAX_ID)],
    request: Request,
    session: DB,
    _: Actor,
) -> Response:
    code = session.get(EnrollmentCode, code_id)
    if code is None:
        raise HTTPException(404, f"enrollment code {code_id} does not exist")
    code.expires_at = min(aware(code.expires_at), now())
    session.commit()
    return done(request, "/ui/enrollment")


# -- wiring ----------------------------------------------------------------------


async def to_login(request: Request, _exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)


def mount(app: FastAPI) -> None:
    """The console's pages, and the files they load (from the packages that ship
    them: nothing is fetched from another site)."""
    app.include_router(router)
    app.add_exception_handler(LoginNeeded, to_login)
    app.mount(
        "/ui/static/bootstrap",
        StaticFiles(directory=xstatic.pkg.bootstrap.BASE_DIR),
        name="bootstrap",
    )
    app.mount(
        "/ui/static/htmx",
        StaticFiles(directory=Path(js_lib_htmx.__file__).parent / "static" / "htmx"),
        name="htmx",
    )
