"""The fleet console's pages with N enrolled devices (default 10,000), on loopback:
each page's answer time as an operator's browser would ask for it (logged in,
the HTML whole), against a baseline in the same run, the admin JSON API's page of
50 devices (one indexed query, no template). The target: every page under a
second.

The devices are written straight into the fleet database (enrolling 10,000 agents
takes minutes and measures enrollment, not the console); a fifth of them have
check-ins (the history and the ledger read them), and a rollout of v2 is running
while the pages are read, its controller ticking over every device as it does in
production.

    .venv/bin/python -m bench.fleet_console [--devices 10000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert

from bench.fleet_scale import (
    ADMIN,
    REPO,
    mlp_onnx,
    pct,
    start,
    uploader,
)
from components.config import load_params
from edge_fleet.client import FleetAdmin
from edge_fleet.db import Device, Telemetry, make_engine
from stack.net import free_port
from tests.edge_fleet.conftest import make_root

COHORTS = ["north", "south", "east", "west", "central"]
HEALTH = ["ok"] * 17 + ["failed", "stale_metadata", "no_model"]


def seed(url: str, devices: int, *, reporting: float = 0.2) -> None:
    """`devices` enrolled gateways, and 10 check-ins of v1 then 10 of v2 for a
    share of them."""
    engine = make_engine(url)
    rng = random.Random(0)
    now = datetime.now(UTC)
    rows = [
        {
            "id": f"bench-{i:05d}",
            "token_sha256": f"{i:064x}",
            "profile": "gateway",
            "cohort": COHORTS[i % len(COHORTS)],
            "labels": {},
            "current_version": rng.choice(["1", "1", "2", None]),
            "slot": "a",
            "health": rng.choice(HEALTH),
            "enrolled_at": now - timedelta(days=30),
            "last_seen": now - timedelta(minutes=rng.uniform(0, 120)),
        }
        for i in range(devices)
    ]
    reports = [
        {
            "device_id": row["id"],
            "cohort": row["cohort"],
            "version": "1" if k < 10 else "2",
            "received_at": now - timedelta(minutes=60 - 3 * k),
            "inferences": 64,
            "errors": 0,
            "latency_ms_median": 0.4,
            "latency_ms_p95": 0.9,
            "confidence_mean": 0.9,
            "class_counts": {"0": 64},
            "feature_stats": {"mean": [0.0], "std": [1.0], "min": [0.0], "max": [1.0]},
        }
        for row in rows[: int(devices * reporting)]
        for k in range(20)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Device), rows)
        for first in range(0, len(reports), 20_000):
            connection.execute(insert(Telemetry), reports[first : first + 20_000])
    engine.dispose()


def timed(http: httpx.Client, path: str, repeat: int) -> tuple[list[float], int]:
    """Milliseconds of each answer (after two unmeasured), and its size."""
    for _ in range(2):
        http.get(path).raise_for_status()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        reply = http.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        reply.raise_for_status()
    return times, len(reply.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-console-"))
    state = work / "fleet"
    params = REPO / "params.yaml"
    make_root(state, work / "root-keys", load_params(params).fleet)
    url = f"sqlite:///{state / 'fleet.db'}"
    t0 = time.perf_counter()
    seed(url, args.devices)
    print(
        f"seeded {args.devices} devices in {time.perf_counter() - t0:.1f} s", flush=True
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(
        [
            str(REPO / ".venv/bin/python"),
            "-m",
            "edge_fleet.server",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--params",
            str(params),
        ],
        f"{base}/health",
        {"EDGELOOP_FLEET_ADMIN_TOKEN": ADMIN, "EDGELOOP_FLEET_DATABASE_URL": url},
    )
    try:
        admin = FleetAdmin(base, ADMIN)
        upload = uploader(admin, load_params(params).registry.model_name, 64)
        for version in ("1", "2"):
            upload(version, mlp_onnx(work / f"v{version}.onnx", 32, seed=int(version)))
        admin.retarget("1", "bench")
        rollout = admin.start_rollout("2", "bench")["rollout"]["id"]
        pages = {
            "devices, first page": "/ui/devices",
            "devices, cohort+health, page 20": "/ui/devices?"
            "cohort=south&health=ok&page=20",
            "devices, v2 not seen 30 min": "/ui/devices?"
            "version=2&seen=not_within&minutes=30",
            "devices, id prefix": "/ui/devices?q=bench-0999",
            "rollout (stages over every device)": f"/ui/rollouts/{rollout}",
            "rollouts": "/ui/rollouts",
            "cohorts": "/ui/cohorts",
            "device (history + ledger)": "/ui/devices/bench-00042",
            "versions": "/ui/versions",
            "enrollment": "/ui/enrollment",
        }
        with httpx.Client(base_url=base, timeout=60) as http:
            login = http.post("/ui/login", data={"token": ADMIN})
            assert login.status_code == 303, login.text  # to the console, logged in
            baseline, _ = timed(
                httpx.Client(
                    base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}
                ),
                "/v1/admin/devices?limit=50",
                args.repeat,
            )
            base_ms = statistics.median(baseline)
            print(
                f"baseline: GET /v1/admin/devices?limit=50 (JSON) median "
                f"{base_ms:.1f} ms, p95 {pct(baseline, 95):.1f} ms",
                flush=True,
            )
            heads = f"{'median ms':>9} {'p95 ms':>7} {'x base':>7} {'KB':>6}"
            print(f"{'page':38} {heads}  <1 s")
            for name, path in pages.items():
                times, size = timed(http, path, args.repeat)
                median = statistics.median(times)
                print(
                    f"{name:38} {median:9.1f} {pct(times, 95):7.1f} "
                    f"{median / base_ms:7.1f} {size / 1024:6.1f}  "
                    f"{'yes' if pct(times, 95) < 1000 else 'NO'}",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"({args.devices} devices, SQLite; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
