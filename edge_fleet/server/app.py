"""`create_app`: the fleet server's state, the rollout controller's thread and the
two routers; `main`: the command (`python -m edge_fleet.server`)."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import sessionmaker

from components.config import (
    DeviceProfile,
    FleetConfig,
    OptimizeConfig,
    load_params,
)
from edge_fleet.controller import Controller
from edge_fleet.coordination import Coordinator
from edge_fleet.db import make_engine
from edge_fleet.errors import FleetConflict
from edge_fleet.keys import FleetKeyError
from edge_fleet.server import admin_api, console, device_api, models_api
from edge_fleet.server.deps import FleetState
from edge_fleet.tuf_repo import FleetRepository
from stack.body_limit import BodyLimit
from stack.settings import get_settings
from stack.unprocessable import answer_unprocessable

log = logging.getLogger("edgeloop.fleet")


def database_url_for(state_dir: Path, database_url: str | None) -> str:
    """The SQLAlchemy URL given, or SQLite in the state folder."""
    return database_url or f"sqlite:///{state_dir / 'fleet.db'}"


def create_app(
    state_dir: Path,
    cfg: FleetConfig,
    *,
    model_name: str,
    database_url: str | None = None,
    admin_token: str,
    tick_s: float = 0.5,
    profiles: dict[str, DeviceProfile] | None = None,
    serve_tuf: bool = True,
) -> FastAPI:
    """`profiles`: the device profiles an upload may name, with the budgets its
    file is loaded under (params' optimize.profiles; default: the default params').
    `serve_tuf`: answer devices' TUF metadata and target requests (the embedded
    default); False where a static server serves the state folder's `tuf/`
    (the production shape: edge_fleet/production/nginx.conf.template)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url_for(state_dir, database_url))
    coordinator = Coordinator(engine, state_dir)
    with coordinator.publishing():  # replicas starting together: one makes it
        repo = FleetRepository(
            state_dir / "tuf",
            state_dir / "keys",
            timestamp_expiry=timedelta(seconds=cfg.timestamp_expiry_s),
            metadata_expiry=timedelta(days=cfg.metadata_expiry_days),
        )
    fleet = FleetState(
        sessions=sessionmaker(engine, expire_on_commit=False),
        coordinator=coordinator,
        repo=repo,
        controller=Controller(repo, cfg, state_dir),
        cfg=cfg,
        model_name=model_name,
        admin_token=admin_token,
        state_dir=state_dir,
        profiles=OptimizeConfig().profiles if profiles is None else profiles,
    )
    app = FastAPI(title="edgeloop fleet server", lifespan=controller_thread(tick_s))
    app.state.fleet = fleet
    include_routes(app, serve_tuf=serve_tuf)
    console.mount(app)  # /ui: the operators' pages
    app.add_exception_handler(FleetConflict, conflict)
    answer_unprocessable(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=cfg.max_request_bytes,
        what="fleet.max_request_bytes",
        limits={
            "/v1/devices/": (cfg.max_telemetry_bytes, "fleet.max_telemetry_bytes"),
            "/v1/admin/models/": (cfg.max_model_bytes, "fleet.max_model_bytes"),
        },
    )
    return app


def include_routes(app: FastAPI, *, serve_tuf: bool = True) -> None:
    """The server's routes (also what its OpenAPI schema is made of: the docs'
    reference reads it from here, without a state folder)."""
    app.include_router(device_api.router)
    if serve_tuf:
        app.include_router(device_api.tuf_router)
    app.include_router(admin_api.router)
    app.include_router(models_api.router)
    app.add_api_route("/health", health)


def health(request: Request) -> dict[str, str]:
    """`role`: whether this replica leads the rollout controller."""
    fleet: FleetState = request.app.state.fleet
    role = "leader" if fleet.coordinator.leading else "replica"
    return {"status": "ok", "role": role}


def controller_thread(tick_s: float):
    """The lifespan that runs the rollout controller every `tick_s` seconds in a
    thread while the server is up, in the one replica that leads (the others
    try to take the lead at each tick: edge_fleet/coordination.py)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        fleet: FleetState = app.state.fleet
        stop = threading.Event()

        def control_loop() -> None:
            while not stop.wait(tick_s):
                try:
                    if not fleet.coordinator.lead():
                        continue
                    with fleet.coordinator.publishing(), fleet.sessions() as session:
                        fleet.controller.tick(session)
                except Exception:
                    log.exception("rollout controller tick failed")
            fleet.coordinator.release()

        thread = threading.Thread(target=control_loop, daemon=True)
        thread.start()
        yield
        stop.set()
        thread.join(timeout=10)

    return lifespan


async def conflict(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FleetConflict)
    return JSONResponse({"detail": exc.message}, status_code=exc.status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--static-tuf",
        action="store_true",
        help="leave the state folder's tuf/ to a static server (nginx: "
        "edge_fleet/production/nginx.conf.template); no /tuf/ routes here",
    )
    settings = get_settings()
    parser.add_argument(
        "--database-url",
        default=settings.fleet_database_url,
        help="SQLAlchemy URL (default: EDGELOOP_FLEET_DATABASE_URL, else SQLite in "
        "the state folder), e.g. postgresql+psycopg://user:pass@host:5432/fleet",
    )
    args = parser.parse_args()
    if settings.fleet_admin_token is None:
        parser.error("EDGELOOP_FLEET_ADMIN_TOKEN must be set")
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("tuf").setLevel(logging.WARNING)  # "no signature" while editing
    try:
        params = load_params(args.params)
        app = create_app(
            args.state_dir,
            params.fleet,
            model_name=params.registry.model_name,
            database_url=args.database_url,
            admin_token=settings.fleet_admin_token.get_secret_value(),
            profiles=params.optimize.profiles,
            serve_tuf=not args.static_tuf,
        )
    except FleetKeyError as error:
        parser.error(str(error))
    except (ArgumentError, OperationalError) as error:
        url = database_url_for(args.state_dir, args.database_url)
        shown = make_url(url).render_as_string(hide_password=True)
        parser.error(
            f"fleet database {shown} (EDGELOOP_FLEET_DATABASE_URL): "
            f"{str(getattr(error, 'orig', None) or error).strip().splitlines()[0]}"
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
