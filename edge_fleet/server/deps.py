"""The fleet server's state (on `app.state.fleet`) and the dependencies its routes
take: a database session, the admin token, the calling device."""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases
# (DB, Auth, Fleet) as objects, not strings.

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from components.config import DeviceProfile, FleetConfig
from edge_fleet.controller import Controller
from edge_fleet.coordination import Coordinator
from edge_fleet.db import Device, Model
from edge_fleet.server.checkin_limit import CheckinLimiter
from edge_fleet.tuf_repo import FleetRepository


@dataclass
class FleetState:
    sessions: sessionmaker
    # Who leads the controller, and the TUF repository's one writer (the
    # controller's ticks and the admin routes that start, stop or retarget a
    # rollout), across this process' threads and the replicas.
    coordinator: Coordinator
    repo: FleetRepository
    controller: Controller
    cfg: FleetConfig
    model_name: str  # the registered model this fleet runs (registry.model_name)
    admin_token: str
    state_dir: Path
    # optimize.profiles: the budgets an uploaded file is loaded under, per profile.
    profiles: dict[str, DeviceProfile]
    # Input features of each stored version (a version's content never changes
    # once uploaded), read once: every check-in's report is checked against it.
    _features: dict[str, int | None] = field(default_factory=dict)
    # Class labels of each stored version (None: not given at upload): a report's
    # class_counts keys must be among them.
    _classes: dict[str, frozenset[str] | None] = field(default_factory=dict)
    # Each device's check-in budget (fleet.checkin_burst, checkin_min_interval_s).
    limiter: CheckinLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = CheckinLimiter(
            self.cfg.checkin_burst, self.cfg.checkin_interval_s
        )

    def model_features(self, session: Session, version: str) -> int | None:
        """How many features `version` takes (None: stored before that was
        recorded); 409 for a version this fleet does not have."""
        if version not in self._features:
            model = session.get(Model, version)
            if model is None:
                raise mismatch(
                    "telemetry.version",
                    f"{version!r}: expected a model version this fleet has",
                )
            self._features[version] = model.features
            # By label, or by output position where a file names no classes
            # (edge_fleet/device/inference.py `predictions`).
            prior = model.class_prior
            self._classes[version] = (
                frozenset(prior) | {str(i) for i in range(len(prior))}
                if prior
                else None
            )
        return self._features[version]

    def model_classes(self, session: Session, version: str) -> frozenset[str] | None:
        """The class keys a report of `version` may count: its labels and output
        positions (None: its classes were not recorded at upload)."""
        self.model_features(session, version)
        return self._classes[version]


def fleet_state(request: Request) -> FleetState:
    return request.app.state.fleet


Fleet = Annotated[FleetState, Depends(fleet_state)]


def db(fleet: Fleet) -> Iterator[Session]:
    with fleet.sessions() as session:
        yield session


DB = Annotated[Session, Depends(db)]
Auth = Annotated[str | None, Header()]


def invalid(where: str, name: str, message: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape (what the OpenAPI schema documents for 422),
    for a value the route checks itself."""
    return RequestValidationError(
        [{"loc": (where, name), "msg": message, "type": "value_error"}]
    )


def mismatch(name: str, message: str) -> HTTPException:
    """A 409 for a well-formed value that does not fit what the fleet has (the
    model version a report names): `name` is the field, as in a 422."""
    return HTTPException(409, f"{name}: {message}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(authorization: str | None) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "expected header Authorization: Bearer <token>")
    return authorization.removeprefix("Bearer ").strip()


def same_secret(given: str | None, secret: str) -> bool:
    """A constant-time comparison that any header value may reach (the ASGI server
    hands headers over as Latin-1 text: `hmac.compare_digest` refuses non-ASCII
    str, so both sides are compared as bytes)."""
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), secret.encode()
    )


def admin(fleet: Fleet, authorization: Auth = None) -> None:
    if not same_secret(bearer(authorization), fleet.admin_token):
        raise HTTPException(401, "admin token required (wrong or missing)")


def device_of_token(session: Session, authorization: str | None) -> Device:
    device = session.scalar(
        select(Device).where(Device.token_sha256 == token_hash(bearer(authorization)))
    )
    if device is None:
        raise HTTPException(401, "unknown device token")
    return device


def own_device(device_id: str, session: Session, authorization: str | None) -> Device:
    """The device the path names, when the token is that device's. The token is
    checked first: without a valid one, an unknown id and an enrolled one are
    answered alike (401), so ids cannot be enumerated."""
    device = device_of_token(session, authorization)
    if device.id != device_id:
        raise HTTPException(
            403, f"this token belongs to another device, not {device_id!r}"
        )
    return device
