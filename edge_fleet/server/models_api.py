"""Model upload (the admin bearer token on every route): a version's file, and the
file a device profile gets where its measured best is another variant
(components/optimization/choice.py; the controller publishes it as that profile's
own signed target)."""

# No `from __future__ import annotations`: FastAPI reads the Annotated aliases.

import hashlib
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as ApiPath
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge_fleet.db import Model, Rollout
from edge_fleet.ledger import LINEAGE_KEYS
from edge_fleet.server.deps import Fleet, admin, invalid
from edge_fleet.server.load_check import refusal, unknown_profiles
from edge_fleet.server.schemas import MAX_FEATURES, NAME, ModelView
from stack.answers import answers

# The file is the body, read as bytes (FastAPI would otherwise document none).
FILE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary", "minLength": 1}
            }
        },
    }
}
router = APIRouter(
    prefix="/v1/admin",
    dependencies=[Depends(admin)],
    responses=answers(
        s400="Content-Length is not a number",
        s401="no admin token, or a wrong one",
        s413="body over fleet.max_model_bytes",
    ),
)

Version = Annotated[str, ApiPath(max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
Profile = Annotated[str, ApiPath(min_length=1, max_length=64, pattern=NAME)]
Variant = Annotated[str, Query(min_length=1, max_length=64)]
# A plain file name: no folder, not "." or ".." (an upload named ".." was stored,
# and every device's install of it failed: "[Errno 16] Device or resource busy").
Filename = Annotated[
    str, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
]


@router.put(
    "/models/{version}",
    status_code=201,
    openapi_extra=FILE_BODY,
    responses=answers(
        s409="another registered model than this fleet runs, a profile this fleet "
        "has no budgets for, or the version exists with other content",
    ),
)
async def upload(
    version: Version,
    request: Request,
    fleet: Fleet,
    *,
    model: Annotated[str, Query(min_length=1, max_length=256)],
    variant: Variant,
    filename: Filename,
    profiles: Annotated[str, Query(max_length=1024)],
    features: Annotated[int, Query(ge=1, le=MAX_FEATURES)],
    class_prior: Annotated[str | None, Query(max_length=65536)] = None,
    lineage: Annotated[str | None, Query(max_length=8192)] = None,
) -> ModelView:
    """The model file as the body (at most fleet.max_model_bytes), a version of the
    registered model this fleet runs taking `features` inputs (its devices'
    telemetry is checked against it); the same version again with the same
    content is answered with the stored one, with other content refused (409).
    Before it is stored, the file must fit and load in the device runtime of each
    profile named, under that profile's budgets (422 otherwise: load_check.py)."""
    if model != fleet.model_name:
        raise HTTPException(
            409,
            f"this fleet runs registered model {fleet.model_name!r} "
            f"(registry.model_name), not {model!r}: one fleet runs one registered "
            "model; for another, run a second fleet (its own EDGELOOP_STATE_DIR "
            "and EDGELOOP_FLEET_PORT), or start this one anew for it (edgeloop "
            "down, move the state folder's fleet/ and fleet-sim/ aside, edgeloop up)",
        )
    data = await request.body()
    prior = parse_class_prior(class_prior)
    origin = parse_lineage(lineage)
    digest = _check_file(data, filename)
    named = [p for p in profiles.split(",") if p]
    if unknown := unknown_profiles(named, fleet.profiles):
        raise HTTPException(409, unknown)
    with fleet.sessions() as session:
        existing = session.get(Model, version)
        if existing is not None:
            if existing.sha256 != digest:
                raise HTTPException(
                    409, f"model version {version} exists with other content"
                )
            return ModelView.model_validate(existing)
    await _loads(
        fleet,
        data,
        filename,
        named,
        features=features,
        classes=len(prior) if prior else None,
    )
    with fleet.sessions() as session:
        if (existing := session.get(Model, version)) is not None:  # meanwhile
            if existing.sha256 != digest:
                raise HTTPException(
                    409, f"model version {version} exists with other content"
                )
            return ModelView.model_validate(existing)
        stored = Model(
            version=version,
            model_name=fleet.model_name,
            filename=filename,
            sha256=digest,
            size=len(data),
            variant=variant,
            profiles=named,
            blob=str(_store(fleet.state_dir, data, digest, filename)),
            class_prior=prior,
            features=features,
            lineage=origin,
        )
        session.add(stored)
        session.commit()
        return ModelView.model_validate(stored)


@router.put(
    "/models/{version}/profiles/{profile}",
    status_code=201,
    openapi_extra=FILE_BODY,
    responses=answers(
        s404="the version was not uploaded",
        s409="the version was already sent to devices, has another file for the "
        "profile, or this fleet has no budgets for the profile",
    ),
)
async def upload_profile_file(
    version: Version,
    profile: Profile,
    request: Request,
    fleet: Fleet,
    *,
    variant: Variant,
    filename: Filename,
) -> ModelView:
    """The file devices of `profile` get for uploaded `version`, as the body. Only
    before the version was first sent to devices: what a published version is does
    not change (409; upload a new version). The same file again is answered with
    the stored version, another file for the profile is refused (409). The file
    must fit and load for the profile first, as an upload's (422)."""
    data = await request.body()
    digest = _check_file(data, filename)
    if unknown := unknown_profiles([profile], fleet.profiles):
        raise HTTPException(409, unknown)
    with fleet.sessions() as session:
        model = session.get(Model, version)
        if model is None:
            raise HTTPException(404, f"model version {version} was not uploaded")
        features, prior = model.features, model.class_prior
        files = model.profile_files or {}
        if profile not in files and _sent(fleet, session, version):
            raise HTTPException(409, _fixed(version))  # before the file's load check
    if features is not None:  # stored before widths were recorded: not checked
        classes = len(prior) if prior else None
        await _loads(
            fleet, data, filename, [profile], features=features, classes=classes
        )
    return await run_in_threadpool(
        _add_profile_file,
        fleet,
        version,
        profile,
        variant=variant,
        filename=filename,
        data=data,
        digest=digest,
    )


def _add_profile_file(
    fleet: Fleet,
    version: str,
    profile: str,
    *,
    variant: str,
    filename: str,
    data: bytes,
    digest: str,
) -> ModelView:
    # As the repository's writer: no rollout of the version starts meanwhile.
    with fleet.coordinator.publishing(), fleet.sessions() as session:
        model = session.get(Model, version)
        if model is None:
            raise HTTPException(404, f"model version {version} was not uploaded")
        files = dict(model.profile_files or {})
        if profile in files:
            if files[profile]["sha256"] != digest:
                raise HTTPException(
                    409,
                    f"model version {version} has another file for profile "
                    f"{profile} ({files[profile]['variant']})",
                )
            return ModelView.model_validate(model)
        if _sent(fleet, session, version):
            raise HTTPException(409, _fixed(version))
        files[profile] = {
            "variant": variant,
            "filename": filename,
            "sha256": digest,
            "size": len(data),
            "blob": str(_store(fleet.state_dir, data, digest, filename)),
        }
        model.profile_files = files  # a new dict: the JSON column sees the change
        session.commit()
        return ModelView.model_validate(model)


async def _loads(
    fleet: Fleet,
    data: bytes,
    filename: str,
    named: list[str],
    *,
    features: int,
    classes: int | None,
) -> None:
    """422 unless the file fits and loads for every profile in `named`."""
    problem = await run_in_threadpool(
        refusal,
        data,
        filename,
        named=named,
        profiles=fleet.profiles,
        features=features,
        batch=fleet.cfg.telemetry_batch,
        classes=classes,
    )
    if problem is not None:
        raise invalid("body", "file", problem)


def _check_file(data: bytes, filename: str) -> str:
    """The body's SHA-256, once it is a file with a bare name."""
    if not data:
        raise invalid("body", "file", "expected the model file as the request body")
    if Path(filename).name != filename:
        raise invalid("query", "filename", f"{filename!r}: expected a bare name")
    return hashlib.sha256(data).hexdigest()


def _store(state_dir: Path, data: bytes, digest: str, filename: str) -> Path:
    """Write the file; its path relative to the state folder (what the database
    keeps, so a restored state folder may live anywhere)."""
    blob = Path("models") / f"{digest}-{filename}"
    (state_dir / blob).parent.mkdir(parents=True, exist_ok=True)
    (state_dir / blob).write_bytes(data)
    return blob


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


def parse_lineage(raw: str | None) -> dict | None:
    """`lineage`: a JSON object of ledger.LINEAGE_KEYS (what the release read
    from the registry); another key is refused, not dropped."""
    if raw is None:
        return None
    try:
        origin = json.loads(raw)
    except ValueError:
        origin = None
    if not isinstance(origin, dict):
        raise invalid("query", "lineage", f"{raw[:80]!r}: expected a JSON object")
    if unknown := sorted(set(origin) - set(LINEAGE_KEYS)):
        raise invalid(
            "query",
            "lineage",
            f"unknown key(s) {', '.join(map(repr, unknown))[:200]}: expected some of "
            + ", ".join(LINEAGE_KEYS),
        )
    return origin


def _sent(fleet: Fleet, session: Session, version: str) -> bool:
    """Whether a rollout of the version started or it is the stable one."""
    sent = session.scalar(select(Rollout.id).where(Rollout.version == version))
    return sent is not None or fleet.controller.stable_version() == version


def _fixed(version: str) -> str:
    return (
        f"model version {version} was already sent to devices: its files are fixed "
        "(upload the change as a new version)"
    )
