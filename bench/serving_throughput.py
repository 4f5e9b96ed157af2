"""Serving throughput and latency: the BentoML service (adaptive batching) against
the same model behind a minimal FastAPI endpoint without batching, both started
here on loopback, at concurrency 1, 8 and 64, one row per request.

Needs the stack's MLflow with a champion: run `make run` first.

    .venv/bin/python -m bench.serving_throughput [--requests 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

from stack.secrets import client_env
from stack.services import free_port
from stack.settings import get_settings

REPO = Path(__file__).resolve().parents[1]


def start(command: list[str], url: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # Both servers read the registry as the stack's MLflow service user.
        env=os.environ
        | client_env(get_settings())
        | {"EDGELOOP_PARAMS": "params.yaml"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.post(url, json={"instances": [[0.0] * 64]}, timeout=2)
            return proc
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"{command[0]} did not answer at {url}")


async def load(
    url: str, rows: list[list[float]], concurrency: int, requests: int
) -> tuple[float, list[float], int]:
    """`requests` POSTs (bounded) from `concurrency` workers; throughput, latencies."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in counter:
            start = time.perf_counter()
            reply = await client.post(url, json={"instances": [rows[i % len(rows)]]})
            latencies.append((time.perf_counter() - start) * 1000)
            failures += reply.status_code != 200

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return requests / elapsed, sorted(latencies), failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    rows = (
        pd.read_parquet(REPO / "data/prepared/test.parquet")
        .drop(columns="label")
        .to_numpy()
        .tolist()
    )
    bento_port, base_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    servers = {
        "bentoml": start(
            [
                str(bin_dir / "bentoml"),
                "serve",
                "serving.service:Predictor",
                "--host",
                "127.0.0.1",
                "--port",
                str(bento_port),
            ],
            f"http://127.0.0.1:{bento_port}/predict",
        ),
        "fastapi": start(
            [sys.executable, "-m", "bench.baseline_server", "--port", str(base_port)],
            f"http://127.0.0.1:{base_port}/predict",
        ),
    }
    urls = {
        "bentoml": f"http://127.0.0.1:{bento_port}/predict",
        "fastapi": f"http://127.0.0.1:{base_port}/predict",
    }
    try:
        print(
            f"{'concurrency':>11} {'server':>8} {'req/s':>8} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'failed':>6}"
        )
        for concurrency in (1, 8, 64):
            rates = {}
            for name, url in urls.items():
                rate, lat, failed = asyncio.run(
                    load(url, rows, concurrency, args.requests)
                )
                rates[name] = rate
                p99 = lat[int(0.99 * (len(lat) - 1))]
                print(
                    f"{concurrency:>11} {name:>8} {rate:8.0f} "
                    f"{statistics.median(lat):7.1f} {p99:7.1f} {failed:>6}"
                )
            print(
                f"{'':>11} bentoml / fastapi throughput: "
                f"{rates['bentoml'] / rates['fastapi']:.2f}x"
            )
    finally:
        for proc in servers.values():
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
