"""Fleet scale on this machine, everything on loopback in one run:

1. Check-ins per second the fleet server sustains (authenticated device check-ins
   with a telemetry batch, written to SQLite, or the database
   EDGELOOP_FLEET_DATABASE_URL names) and their p50/p99 latency, against a
   baseline in the same run: a static file server (Starlette's StaticFiles under
   uvicorn, no database, no auth) serving the same TUF timestamp metadata.
2. A rollout of a ~100 KB ONNX model (an MLP fitted on the digits) to N simulated
   devices (default 1,000), canary -> 2 waves -> full, timed from the rollout's
   start until every device runs it (or until it was rolled back: it stops
   then, and says when); with the devices left on a broken model (0 is the
   target) and bytes received per device against the model's size.

Each figure is printed as soon as it is measured; a dropped connection counts as
a failed request. The production shape (replicas, nginx, failover):
bench/fleet_replicas.py.

    .venv/bin/python -m bench.fleet_scale [--devices 1000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import yaml
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sqlalchemy import create_engine, text

from components.config import FleetConfig, load_params
from edge_fleet.client import FleetAdmin
from edge_fleet.device.agent import Agent
from edge_fleet.sim.runner import FleetSpec, build_fleet, run_fleet
from stack.net import free_port
from tests.edge_fleet.conftest import make_root

REPO = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin"


def mlp_onnx(path: Path, hidden: int, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    digits = load_digits()
    fit = MLPClassifier((hidden,), max_iter=60, random_state=seed).fit(
        digits.data, digits.target
    )
    (w1, w2), (b1, b2) = fit.coefs_, fit.intercepts_
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h"]),
            helper.make_node("MatMul", ["h", "W2"], ["o0"]),
            helper.make_node("Add", ["o0", "b2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
        initializer=[
            numpy_helper.from_array(a.astype(np.float32), n)
            for a, n in ((w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2"))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def start(command: list[str], health: str, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{command} did not answer {health}")


async def hammer(
    requests: list[tuple[str, str, dict, bytes | None]], concurrency: int
) -> tuple[float, list[float], int]:
    """Send every request (method, url, headers, body) at this concurrency."""
    latencies: list[float] = []
    failures = 0
    queue = list(reversed(requests))
    async with httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=concurrency)
    ) as http:

        async def worker() -> None:
            nonlocal failures
            while queue:
                method, url, headers, body = queue.pop()
                t0 = time.perf_counter()
                try:
                    reply = await http.request(
                        method, url, headers=headers, content=body
                    )
                except httpx.HTTPError:  # a dropped connection: a failed request
                    failures += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
                failures += reply.status_code >= 400

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(requests) / (time.perf_counter() - t0), latencies, failures


def bench_fleet(
    admin: FleetAdmin,
    url: str,
    devices: int,
    *,
    home: Path,
    metadata: Path,
    cfg: FleetConfig,
    inputs: np.ndarray,
    http: httpx.Client,
) -> list[Agent]:
    """`devices` simulated gateways of the fleet at `url`, one enrollment code."""
    return build_fleet(
        FleetSpec(devices=devices, prefix="bench"),
        server=url,
        home=home,
        factory_root=(metadata / "1.root.json").read_bytes(),
        enroll_code=admin.enrollment_code(
            profiles=["gateway"], cohorts=cfg.cohorts, devices=devices
        )["code"],
        cfg=cfg,
        inputs=inputs,
        http=http,
    )


def uploader(admin: FleetAdmin, model_name: str, features: int) -> Callable:
    """upload(version, file): an fp32 file for the gateways."""
    return partial(
        admin.upload,
        model=model_name,
        variant="fp32",
        profiles=["gateway"],
        features=features,
    )


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:  # noqa: PLR0915 - one measured story, top to bottom
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=384, help="MLP width (~100 KB)")
    parser.add_argument("--poll-s", type=float, default=3.0)
    parser.add_argument(
        "--stage-timeout-s",
        type=float,
        default=60.0,
        help="a stage is judged on what reported by then (a slow machine needs more)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeloop-fleet-bench-"))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["fleet"] |= {
        "poll_s": args.poll_s,
        "bake_s": 3,
        "canary_percent": 5,
        "waves": [25, 50],
        "stage_timeout_s": args.stage_timeout_s,
        "profile_mix": {"gateway": 1.0},
        "offline_after_s": 120,
    }
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    cfg = load_params(params_file).fleet
    model_name = load_params(params_file).registry.model_name
    model = mlp_onnx(work / "mlp.onnx", args.hidden)
    size = model.stat().st_size

    port, static_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    metadata = work / "fleet" / "tuf" / "metadata"
    make_root(work / "fleet", work / "root-keys", cfg)
    servers: list[subprocess.Popen] = []
    # SIGTERM as Ctrl-C: the `finally` below stops every server this run started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        say(f"work folder {work}; starting the fleet server and the static baseline")
        servers.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "edge_fleet.server",
                    "--port",
                    str(port),
                    "--state-dir",
                    str(work / "fleet"),
                    "--params",
                    str(params_file),
                ],
                f"{url}/health",
                {
                    "EDGELOOP_FLEET_ADMIN_TOKEN": ADMIN,
                },
            )
        )
        servers.append(
            start(
                [
                    sys.executable,
                    "-c",
                    "import sys, uvicorn; from starlette.applications import "
                    "Starlette; from starlette.routing import Mount; "
                    "from starlette.staticfiles import StaticFiles; "
                    "app = Starlette(routes=[Mount('/', "
                    "StaticFiles(directory=sys.argv[1]))]); "
                    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), "
                    "log_level='warning')",
                    str(metadata),
                    str(static_port),
                ],
                f"http://127.0.0.1:{static_port}/timestamp.json",
                {},
            )
        )
        admin = FleetAdmin(url, ADMIN)
        http = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32))
        inputs = load_digits().data.astype(np.float32)
        agents = bench_fleet(
            admin,
            url,
            args.devices,
            home=work / "devices",
            metadata=metadata,
            cfg=cfg,
            inputs=inputs,
            http=http,
        )
        say(f"enrolling {len(agents)} devices")
        t0 = time.perf_counter()
        for agent in agents:
            agent.step()  # enroll + first check-in
        enrolled_s = time.perf_counter() - t0

        # 1. Check-ins/s against the static baseline, same concurrency.
        upload = uploader(admin, model_name, inputs.shape[1])
        upload("1", model)
        admin.retarget("1", "bench warm-up")
        say("installing v1 on every device")
        for agent in agents:
            agent.step()  # installs v1
            agent.step()  # now running v1: check-ins carry telemetry
        # Bodies of every device, sent in turn: each device checks in a few times,
        # within its check-in budget (fleet.checkin_burst; past it, 429s).
        sample = agents
        bodies = [json.dumps(agent._checkin()).encode() for agent in sample]
        checkins = [
            (
                "POST",
                f"{url}/v1/devices/{sample[i % len(sample)].id.device_id}/checkin",
                {
                    "Authorization": f"Bearer {sample[i % len(sample)].state['token']}",
                    "content-type": "application/json",
                },
                bodies[i % len(sample)],
            )
            for i in range(args.requests)
        ]
        statics = [
            ("GET", f"http://127.0.0.1:{static_port}/timestamp.json", {}, None)
        ] * args.requests
        # Interleaved, twice each, best run kept: the machine is noisy.
        static_runs, fleet_runs = [], []
        say(f"check-ins vs static metadata: {args.requests} requests each, twice")
        for _ in range(2):
            static_runs.append(asyncio.run(hammer(statics, args.concurrency)))
            fleet_runs.append(asyncio.run(hammer(checkins, args.concurrency)))
        static_rps, static_lat, static_fail = max(static_runs, key=lambda r: r[0])
        fleet_rps, fleet_lat, fleet_fail = max(fleet_runs, key=lambda r: r[0])
        say(
            f"check-ins (c={args.concurrency}, {args.requests} requests): "
            f"fleet server {fleet_rps:,.0f}/s p50 {pct(fleet_lat, 50):.1f} ms "
            f"p99 {pct(fleet_lat, 99):.1f} ms ({fleet_fail} failed); static "
            f"metadata {static_rps:,.0f}/s p50 {pct(static_lat, 50):.1f} ms p99 "
            f"{pct(static_lat, 99):.1f} ms ({static_fail} failed); "
            f"ratio {fleet_rps / static_rps:.2f}x"
        )

        # 2. The rollout to every device.
        for agent in agents:
            agent.bytes_received = 0
        # v2: refitted with another seed, so every byte of the file differs.
        v2 = mlp_onnx(work / "mlp-v2.onnx", args.hidden, seed=1)
        upload("2", v2)
        database = work / "fleet" / "fleet.db"
        database_url = os.environ.get("EDGELOOP_FLEET_DATABASE_URL")
        stored_before = _database_bytes(database)
        reports_before = stored_reports(database_url or f"sqlite:///{database}")
        t0 = time.perf_counter()
        rollout = admin.start_rollout("2", "bench")["rollout"]
        say(f"rollout {rollout['id']} of v2 to {len(agents)} devices")
        shown = [time.monotonic()]

        def finished() -> bool:
            state = admin.rollout(rollout["id"])
            if time.monotonic() - shown[0] >= PROGRESS_S:
                shown[0] = time.monotonic()
                on_v2 = sum(a.version == "2" for a in agents)
                say(
                    f"  {time.perf_counter() - t0:5.0f} s: {state['state']}, stage "
                    f"{state['stage_name']}; {on_v2}/{len(agents)} devices on v2"
                )
            if state["state"] in ("running", "paused"):
                return False
            if ended[0] is None:
                ended[0] = time.perf_counter() - t0
                say(f"  {ended[0]:5.0f} s: the rollout {state['state']}")
            # Completed: until every device runs it; otherwise it is over.
            return state["state"] != "completed" or all(
                a.version == "2" for a in agents
            )

        ended: list[float | None] = [None]
        stats = asyncio.run(run_fleet(agents, cfg, done=finished, max_s=600))
        rollout_s = ended[0] if ended[0] is not None else time.perf_counter() - t0
        final = admin.rollout(rollout["id"])
        on_new = sum(a.version == "2" for a in agents)
        broken = sum(a.version is None or a.error is not None for a in agents)
        per_device = statistics.median(a.bytes_received for a in agents)
        reports = (
            stored_reports(database_url or f"sqlite:///{database}") - reports_before
        )
        per_report = (_database_bytes(database) - stored_before) / max(reports, 1)
    finally:
        for proc in servers:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)

    print(
        f"devices: {args.devices}; enrolment + first check-in of all: "
        f"{enrolled_s:.1f} s"
    )
    print(
        f"rollout of a {size / 1024:.0f} KB model canary -> 2 waves -> full: "
        f"{final['state']} in {rollout_s:.1f} s; {on_new}/{args.devices} devices on "
        f"it, {broken} without a working model or with an error; "
        f"{stats.steps} check-ins ({stats.steps / stats.seconds:.0f}/s), "
        f"{stats.failed_steps} failed"
    )
    print(
        f"bytes received per device for the update: median {per_device:,.0f} "
        f"({per_device / size:.2f}x the model file)"
    )
    if database_url:
        print(f"telemetry stored: {reports} reports (on {database_url.split(':')[0]})")
        return
    fleet = load_params(REPO / "params.yaml").fleet
    per_day = 86400 / fleet.poll_s  # reports per device per day at the default poll
    raw_bound = per_report * fleet.telemetry_retention_s / fleet.poll_s
    windows_day = per_report * 86400 / fleet.telemetry_window_s
    print(
        f"telemetry stored: {per_report:,.0f} bytes per report ({reports} reports, "
        f"SQLite file growth); at the default poll of {fleet.poll_s:g} s, per "
        f"device: without retention {per_report * per_day / 1e6:,.1f} MB a day, "
        f"growing; with it (fleet.telemetry_retention_s "
        f"{fleet.telemetry_retention_s}, windows of {fleet.telemetry_window_s} s "
        f"kept {fleet.telemetry_window_retention_days} days) raw reports bounded at "
        f"{raw_bound / 1e6:,.1f} MB plus {windows_day / 1e3:,.0f} KB of windows a "
        f"day (at most {windows_day * fleet.telemetry_window_retention_days / 1e6:,.1f}"
        " MB)"
    )


PROGRESS_S = 10.0


def say(line: str) -> None:
    print(line, flush=True)


def _database_bytes(path: Path) -> int:
    """The SQLite database with its write-ahead log."""
    return sum(
        p.stat().st_size
        for p in (path, path.with_name(path.name + "-wal"))
        if p.exists()
    )


def stored_reports(url: str) -> int:
    """Telemetry reports stored so far (beside the running server), on SQLite or
    the database `EDGELOOP_FLEET_DATABASE_URL` names."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM telemetry")).scalar()
    finally:
        engine.dispose()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        say("stopped (Ctrl-C or SIGTERM); the servers it started are stopped")
        sys.exit(130)
