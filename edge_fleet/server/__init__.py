"""The fleet server: devices, rollouts and telemetry (FastAPI on SQLAlchemy), the TUF
repository devices update from, and the rollout controller in a background thread
(in the one replica that leads: edge_fleet/coordination.py).

    python -m edge_fleet.server --host 127.0.0.1 --port 8300 [--static-tuf]

Several replicas on one PostgreSQL database behind nginx, which serves the TUF
files (`--static-tuf`): edge_fleet/production/.

- `app.py`: `create_app` (state, the controller's thread, the routers) and `main`.
- `device_api.py`: the device API (`Authorization: Bearer <device token>`; a device
  reads and writes only its own state): enroll (with the fleet's enrollment key),
  check-in with health and a telemetry batch, its own state, the TUF metadata and
  targets (HTTP range requests; not with `--static-tuf`), and whether a token is a
  device's (for nginx's auth_request).
- `admin_api.py`: the admin API (`Authorization: Bearer <admin token>`): devices,
  fleet summary, telemetry, model upload, rollouts (start, pause, resume, abort,
  rollback), retarget.
- `schemas.py`: request bodies (extra fields refused) and response models.
- `deps.py`: the server's state and the dependencies that authenticate callers.
"""

from edge_fleet.server.app import create_app, database_url_for, main

__all__ = ["create_app", "database_url_for", "main"]
