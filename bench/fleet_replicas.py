"""The fleet's production shape against one process, on loopback, in one run:
PostgreSQL (a throwaway cluster, tests/postgres.py), fleet server replicas on it
and nginx in front (edge_fleet/production/), load from `wrk` (Debian's package;
a Lua script rotates the devices' tokens and bodies).

1. Check-ins per second (authenticated, each with a telemetry batch, written to
   PostgreSQL): one replica alone, against two replicas behind nginx; and
   nginx serving the TUF timestamp file to the same devices, the ceiling.
2. TUF metadata: timestamp.json from one replica's own route (what the embedded
   default does) against nginx's static file.
3. Failover: a rollout to N simulated devices through nginx; at wave-1 the
   leading replica is killed with SIGKILL; the seconds until the other leads and
   until the rollout moves again, how it ends, whether a stage was judged twice.
4. No thundering herd: the devices' check-in attempts per second before, during
   and after a 20 s outage of nginx (the agents' own jitter, backoff and
   Retry-After: edge_fleet/device/polling.py).

Each figure is printed when it is measured; Ctrl-C or SIGTERM stops every
process it started.

    .venv/bin/python -m bench.fleet_replicas [--devices 300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import yaml
from sklearn.datasets import load_digits

from bench.fleet_scale import bench_fleet, mlp_onnx, say, start, uploader
from components.config import load_params
from edge_fleet.client import FleetAdmin
from edge_fleet.production.nginx import Nginx
from edge_fleet.sim.runner import run_fleet
from stack.net import free_port
from tests.edge_fleet.conftest import make_root
from tests.postgres import start_cluster

REPO = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin"


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict:
    """wrk's requests/s, latency percentiles (ms) and non-2xx answers."""
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
        + ["-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    out = done.stdout
    if done.returncode != 0 or "Requests/sec" not in out:
        raise SystemExit(f"wrk failed: {done.stderr.strip() or out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    for line in out.splitlines():
        if line.startswith("not 2xx: "):
            say(f"  {line}")
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms("50%"),
        "p99": ms("99%"),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "none",
    }


def lua_requests(path: Path, requests: list[tuple[str, str, str, str | None]]) -> Path:
    """A wrk script sending `requests` (method, path, token, JSON body) in turn,
    each thread from its own place in the list."""
    # Formatted in init(): wrk sets the Host header then (HTTP/1.1 needs one;
    # nginx answers 400 without it, uvicorn does not mind).
    lines = ["local items = {}"]
    for i, (method, where, token, body) in enumerate(requests, start=1):
        headers = f'{{["Authorization"]="Bearer {token}"'
        headers += ', ["Content-Type"]="application/json"}' if body else "}"
        payload = f"[==[{body}]==]" if body else "nil"
        lines.append(f'items[{i}] = {{"{method}", "{where}", {headers}, {payload}}}')
    lines += [
        "local reqs = {}",
        "local count = 0",
        "function setup(thread) count = count + 1; thread:set('id', count) end",
        "local i = 0",
        "function init(args)",
        "  for k, r in ipairs(items) do",
        "    reqs[k] = wrk.format(r[1], r[2], r[3], r[4])",
        "  end",
        "  i = ((id or 1) - 1) * math.floor(#reqs / 2)",
        "end",
        "function request() i = i % #reqs + 1; return reqs[i] end",
        # The first answer that is not 2xx, per thread: what it said.
        "local shown = false",
        "function response(status, headers, body)",
        "  if (status < 200 or status > 299) and not shown then",
        "    shown = true",
        "    print('not 2xx: ' .. status .. ' ' .. string.sub(body or '', 1, 160))",
        "  end",
        "end",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:  # noqa: PLR0915 - one measured story, top to bottom
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=384, help="MLP width (~100 KB)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: Debian's wrk (tests/system_packages.sh)")

    work = Path(tempfile.mkdtemp(prefix="edgeloop-fleet-replicas-"))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["fleet"] |= {
        "poll_s": 2.0,
        "bake_s": 8,  # a stage long enough to kill its judge in the middle
        "canary_percent": 10,
        "waves": [50],
        "stage_timeout_s": 120,
        "profile_mix": {"gateway": 1.0},
        "offline_after_s": 120,
        # Capacity is measured here, not the per-device budget.
        "checkin_burst": 1_000_000,
        "checkin_min_interval_s": 0.001,
    }
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    params = load_params(params_file)
    cfg = params.fleet
    state = work / "fleet"
    make_root(state, work / "root-keys", cfg)
    processes: dict[str, subprocess.Popen] = {}
    cluster = None
    nginx: Nginx | None = None
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cluster = start_cluster()
        database = cluster.url(cluster.create_database("fleet"))
        env = {"EDGELOOP_FLEET_ADMIN_TOKEN": ADMIN}
        ports = {name: free_port() for name in ("solo", "a", "b")}

        def replica(name: str, *extra: str) -> None:
            processes[name] = start(
                [sys.executable, "-m", "edge_fleet.server"]
                + ["--port", str(ports[name]), "--state-dir", str(state)]
                + ["--params", str(params_file), "--database-url", database, *extra],
                f"http://127.0.0.1:{ports[name]}/health",
                env,
            )

        say(f"work folder {work}; PostgreSQL on {cluster.port}")
        # a or b leads (the first started): the pair carries the controller's
        # ticks, the replica alone only answers.
        replica("a", "--static-tuf")
        replica("b", "--static-tuf")
        replica("solo")  # serves TUF itself, as the embedded default does
        nginx = Nginx(
            work / "nginx",
            f"127.0.0.1:{free_port()}",
            [f"127.0.0.1:{ports['a']}", f"127.0.0.1:{ports['b']}"],
            state,
            workers=1,
        )
        nginx.start()
        solo = f"http://127.0.0.1:{ports['solo']}"
        admin = FleetAdmin(nginx.url, ADMIN)
        inputs = load_digits().data.astype(np.float32)
        http = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32))
        agents = bench_fleet(
            admin,
            nginx.url,
            args.devices,
            home=work / "devices",
            metadata=state / "tuf" / "metadata",
            cfg=cfg,
            inputs=inputs,
            http=http,
        )
        upload = uploader(admin, params.registry.model_name, inputs.shape[1])
        upload("1", mlp_onnx(work / "mlp.onnx", args.hidden))
        admin.retarget("1", "bench")
        say(f"enrolling {len(agents)} devices through nginx; installing v1")
        t0 = time.perf_counter()
        for agent in agents:
            agent.step()
        say(f"enrolment and a first check-in of each: {time.perf_counter() - t0:.1f} s")
        for agent in agents:
            agent.step()
            agent.step()

        # 1. Check-ins: bodies with telemetry, each device in turn.
        checkins = [
            (
                "POST",
                f"/v1/devices/{a.id.device_id}/checkin",
                a.state["token"],
                json.dumps(a._checkin()),
            )
            for a in agents
        ]
        script = lua_requests(work / "checkins.lua", checkins)
        timestamp = [
            ("GET", "/tuf/metadata/timestamp.json", a.state["token"], None)
            for a in agents
        ]
        metadata = lua_requests(work / "timestamp.lua", timestamp)
        run = partial(wrk, seconds=args.seconds, connections=args.connections)
        figures = {}
        for label, url, lua, first in (
            ("check-ins, one replica", solo, script, checkins[0]),
            ("check-ins, two replicas behind nginx", nginx.url, script, checkins[0]),
            ("timestamp.json, one replica's route", solo, metadata, timestamp[0]),
            ("timestamp.json, nginx (static)", nginx.url, metadata, timestamp[0]),
        ):
            figures[label] = got = run(url, lua)
            say(
                f"{label}: {got['rps']:,.0f}/s p50 {got['p50']:.1f} ms "
                f"p99 {got['p99']:.1f} ms ({got['non_2xx']} not 2xx; socket "
                f"errors {got['socket_errors']})"
            )
            if got["non_2xx"]:  # what such an answer says, once
                method, where, token, body = first
                answer = http.request(
                    method,
                    url + where,
                    headers={"Authorization": f"Bearer {token}"}
                    | ({"Content-Type": "application/json"} if body else {}),
                    content=body,
                )
                say(f"  e.g. {answer.status_code}: {answer.text[:200]}")
        one = figures["check-ins, one replica"]["rps"]
        two = figures["check-ins, two replicas behind nginx"]["rps"]
        route = figures["timestamp.json, one replica's route"]["rps"]
        static = figures["timestamp.json, nginx (static)"]["rps"]
        say(
            f"ratios: two replicas / one {two / one:.2f}x (target 1.6x where the "
            f"cores allow; {os.cpu_count()} cores here, shared by wrk, nginx, "
            f"PostgreSQL and the replicas); check-ins / static timestamp "
            f"{two / static:.3f}x; metadata nginx / route {static / route:.0f}x"
        )
        os.killpg(processes.pop("solo").pid, signal.SIGTERM)

        # 3. Failover mid-rollout.
        upload("2", mlp_onnx(work / "mlp-v2.onnx", args.hidden, seed=1))
        rollout = admin.start_rollout("2", "bench")["rollout"]
        t0 = time.monotonic()
        say(f"rollout {rollout['id']} of v2 to {len(agents)} devices")
        seen: dict = {"killed_at": None, "leads_after": None, "moved_after": None}

        def leader() -> str | None:
            for name in ("a", "b"):
                if name in processes:
                    try:
                        role = httpx.get(
                            f"http://127.0.0.1:{ports[name]}/health", timeout=2
                        ).json()["role"]
                    except httpx.HTTPError:
                        continue
                    if role == "leader":
                        return name
            return None

        def watch() -> bool:
            now = admin.rollout(rollout["id"])
            if seen["killed_at"] is None and now["stage_name"] == "wave-1":
                name = leader()
                if name is not None:
                    os.killpg(processes.pop(name).pid, signal.SIGKILL)
                    seen["killed_at"] = time.monotonic()
                    seen["events_then"] = len(now["events"])
                    say(f"  {time.monotonic() - t0:5.1f} s: killed the leader ({name})")
            elif seen["killed_at"] is not None:
                since = time.monotonic() - seen["killed_at"]
                if seen["leads_after"] is None and leader() is not None:
                    seen["leads_after"] = since
                    say(f"  the other replica leads after {since:.1f} s")
                if (
                    seen["moved_after"] is None
                    and len(now["events"]) > seen["events_then"]
                ):
                    seen["moved_after"] = since
                    say(
                        f"  the rollout moved again after {since:.1f} s "
                        f"({now['events'][-1]['event']})"
                    )
            return now["state"] not in ("running", "paused") and all(
                a.version == "2" for a in agents
            )

        asyncio.run(run_fleet(agents, cfg, done=watch, max_s=600))
        final = admin.rollout(rollout["id"])
        passed = [e["stage"] for e in final["events"] if e["event"] == "stage_passed"]
        on_new = sum(a.version == "2" for a in agents)
        say(
            f"rollout {final['state']} in {time.monotonic() - t0:.0f} s; "
            f"{on_new}/{len(agents)} on v2; stages passed {passed} "
            f"({'none' if len(passed) == len(set(passed)) else 'a stage'} judged twice)"
        )

        # 4. An outage, and what comes back after it.
        herd(agents, cfg, http, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in processes.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        if cluster is not None:
            cluster.stop()


OUTAGE_AT_S, OUTAGE_S, AFTER_S = 20.0, 20.0, 40.0


def herd(agents: list, cfg, http: httpx.Client, nginx: Nginx) -> None:
    """Check-in attempts per second around an outage of nginx (module doc, 4)."""
    attempts: dict[int, int] = {}
    t0 = time.monotonic()

    def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/checkin"):
            second = int(time.monotonic() - t0)
            attempts[second] = attempts.get(second, 0) + 1

    http.event_hooks["request"].append(count)

    def outage() -> None:
        time.sleep(OUTAGE_AT_S)
        nginx.stop()
        say(f"  nginx stopped for {OUTAGE_S:.0f} s")
        time.sleep(OUTAGE_S)
        nginx.start()
        say("  nginx back")

    down = threading.Thread(target=outage, daemon=True)
    down.start()
    total = OUTAGE_AT_S + OUTAGE_S + AFTER_S
    asyncio.run(run_fleet(agents, cfg, done=lambda: False, max_s=total))
    down.join()
    http.event_hooks["request"].remove(count)
    per_s = [attempts.get(s, 0) for s in range(int(total))]
    start, back = int(OUTAGE_AT_S), int(OUTAGE_AT_S + OUTAGE_S)
    steady = float(np.mean(per_s[5:start]))
    during = float(np.mean(per_s[start:back]))
    after = per_s[back : back + 15]
    peak = max(after)
    settled = next(
        (i for i in range(len(after)) if after[i] <= 1.5 * steady), len(after)
    )
    say(
        f"check-in attempts/s: steady {steady:.0f}; during a {OUTAGE_S:.0f} s "
        f"outage {during:.0f}; after it, peak {peak}/s ({peak / steady:.2f}x the "
        f"steady rate; every device at once would be {len(agents)}), within 1.5x "
        f"of steady after {settled} s; per second after: {after}"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        say("stopped (Ctrl-C or SIGTERM); every process it started is stopped")
        sys.exit(130)
