"""Serving throughput and latency, measured by a load generator we did not write
(`wrk` or `hey`, Debian's packages): the BentoML service (serving/service.py)
against the same model file behind a minimal FastAPI endpoint
(bench/baseline_server.py), both started here on loopback, at concurrency 1, 8, 64
and 256, one row per request; at each level three rounds, each server in turn in
each, and the median round.

wrk by default: on this 2-core machine the generator shares the cores with the
servers, and hey spends 0.1-0.2 ms of CPU per request (its CSV included) where wrk
spends 0.02-0.05 ms, so hey takes a larger share from a server that uses both cores
than from one that uses one.

Two models: the registry's champion (the digits CNN, fp32: tiny, so the HTTP stack
is most of the cost), and a compute-heavier wide CNN (about 4.8 M multiply-adds a
row, random weights: speed does not depend on them) registered here as
`edgeloop-bench-wide`, where batching has something to gain.

Needs the stack's MLflow with a champion (`make run` first) and `wrk` or `hey`
(`apt-get install wrk hey`; tests/system_packages.sh installs them).

    .venv/bin/python -m bench.serving_throughput [--generator wrk|hey]
        [--seconds 4] [--requests 2000] [--rounds 3] [--levels 1 8 64 256]
        [--skip-wide]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from mlflow import MlflowClient
from torch import nn

from components.config import load_params
from components.optimization.compress import count_macs, export_onnx
from flows.adapters import registry
from stack.contracts import SYNTHETIC_HEADER, Tag
from stack.net import free_port
from stack.secrets import client_env, gate_key
from stack.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
WIDE = "edgeloop-bench-wide"


@dataclass(frozen=True)
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


def hey(url: str, body: Path, requests: int, concurrency: int) -> Result:
    """`requests` POSTs of `body` from `concurrency` workers (hey sends
    requests // concurrency from each: rounded to that); hey's per-request CSV gives
    latencies and status codes, the wall clock the rate. Errors: requests without a
    200, refused or never answered."""
    requests = max(requests // concurrency, 1) * concurrency
    began = time.perf_counter()
    out = subprocess.run(
        ["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST"]
        + ["-T", "application/json", "-H", f"{SYNTHETIC_HEADER}: bench"]
        + ["-D", str(body), "-o", "csv", "-t", "30", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    elapsed = time.perf_counter() - began
    rows = list(csv.DictReader(io.StringIO(out)))
    latency = np.array([float(r["response-time"]) * 1000 for r in rows])
    errors = requests - sum(r["status-code"] == "200" for r in rows)
    return Result(
        len(rows) / elapsed,
        float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        float(np.percentile(latency, 99)) if len(latency) else float("nan"),
        errors,
    )


SYNTHETIC = {SYNTHETIC_HEADER: "bench"}  # kept out of serving's prediction log


# wrk's report as one JSON line (its Lua `done` hook); latencies in microseconds.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["@SYNTHETIC@"] = "bench"
wrk.body = io.open(os.getenv("BENCH_BODY")):read("*a")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "p50": %f, "p99": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
""".replace("@SYNTHETIC@", SYNTHETIC_HEADER)


def wrk(url: str, body: Path, seconds: float, concurrency: int) -> Result:
    """`concurrency` connections, each sending the next request when the last one
    is answered, for `seconds` (one wrk thread: 2 cores here). Errors: refused or
    broken connections, timeouts (30 s), and answers other than 2xx/3xx."""
    script = body.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{seconds}s"]
        + ["--timeout", "30s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
        env=os.environ | {"BENCH_BODY": str(body)},
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return Result(
        report["requests"] / report["seconds"],
        report["p50"] / 1000,
        report["p99"] / 1000,
        report["errors"],
    )


def wide_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128 * 64, 10),
    )


def register_wide(client: MlflowClient, params: dict[str, str], folder: Path) -> int:
    """The wide CNN as the champion of `edgeloop-bench-wide`, with the files and
    params serving reads (the digits champion's labels and feature range)."""
    model = wide_cnn()
    onnx = export_onnx(model, 64, folder / "variants" / "wide.onnx")
    report = folder / "optimize" / "variants.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"variants": [{"name": "fp32", "file": onnx.name}]}))
    mlflow.set_experiment("edgeloop-bench")
    with mlflow.start_run(run_name="wide-cnn") as run:
        mlflow.log_params(
            {k: params[k] for k in ("validation.labels", "validation.feature_range")}
        )
        mlflow.log_artifact(str(report), "optimize")
        mlflow.log_artifact(str(onnx), "variants")
    if not client.search_registered_models(f"name = '{WIDE}'"):
        client.create_registered_model(WIDE)
    version = client.create_model_version(
        WIDE,
        f"runs:/{run.info.run_id}/variants",
        run.info.run_id,
        tags={Tag.SHIP_FILE: f"variants/{onnx.name}", Tag.SHIP_VARIANT: "fp32"},
    ).version
    # Serving loads only a sealed version: sealed with the stack's gate key, as the
    # gates would (this bench's model is not trained by the pipeline).
    registry.seal_decision(client, WIDE, version, True, gate_key(get_settings()))
    client.set_registered_model_alias(WIDE, "champion", version)
    return count_macs(model, 64)


def params_for(model_name: str, folder: Path) -> Path:
    """params.yaml with serving for `model_name`, and no prediction log (the bench's
    one repeated row must not reach drift monitoring)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["registry"]["model_name"] = model_name
    raw["serving"]["log_sample_rate"] = 0.0
    path = folder / f"params-{model_name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start(command: list[str], port: int, params: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        command + ["--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # Both servers read the registry as the stack's MLflow service user.
        env=os.environ | client_env(get_settings()) | {"EDGELOOP_PARAMS": str(params)},
    )
    url = f"http://127.0.0.1:{port}/predict"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.post(
                url, json={"instances": [[0.0] * 64]}, headers=SYNTHETIC, timeout=5
            ).is_success:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop(proc)
    raise SystemExit(f"{command[0]} did not answer at {url}")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
    except ProcessLookupError:
        return
    proc.wait(timeout=60)


def servers(params: Path) -> dict[str, list[str]]:
    bentoml = str(Path(sys.executable).parent / "bentoml")
    return {
        "bentoml": [bentoml, "serve", "serving.service:Predictor"]
        + ["--host", "127.0.0.1"],
        "fastapi": [sys.executable, "-m", "bench.baseline_server"]
        + ["--params", str(params)],
    }


def load(url: str, body: Path, concurrency: int, args: argparse.Namespace) -> Result:
    """A short warm-up (new connections, first requests), then the measured run."""
    if args.generator == "wrk":
        wrk(url, body, 1, concurrency)
        return wrk(url, body, args.seconds, concurrency)
    hey(url, body, min(args.requests, 200), concurrency)
    return hey(url, body, args.requests, concurrency)


def measure(
    model: str, params: Path, body: Path, levels: list[int], args: argparse.Namespace
) -> list[str]:
    """Both servers; at each level `rounds` rounds, each server in turn in each (the
    machine's noise hits both alike); the median round by ratio is reported."""
    ports = {"bentoml": free_port(), "fastapi": free_port()}
    procs = {
        name: start(command, ports[name], params)
        for name, command in servers(params).items()
    }
    rows = []
    try:
        for concurrency in levels:
            rounds = []
            for _ in range(args.rounds):
                results = {}
                for name, port in ports.items():
                    url = f"http://127.0.0.1:{port}/predict"
                    results[name] = load(url, body, concurrency, args)
                rounds.append(
                    (results["bentoml"].rate / results["fastapi"].rate, results)
                )
                print(
                    f"{model:>20} {concurrency:>5} round {len(rounds)}: "
                    + "  ".join(
                        f"{n} {r.rate:.0f}/s p50 {r.p50_ms:.1f} p99 {r.p99_ms:.1f} "
                        f"errors {r.errors}"
                        for n, r in results.items()
                    )
                    + f"  ratio {rounds[-1][0]:.2f}x",
                    flush=True,
                )
            ratio, results = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
            b, f = results["bentoml"], results["fastapi"]
            ratios = ", ".join(f"{r:.2f}" for r, _ in rounds)
            rows.append(
                f"| {model} | {concurrency} | {b.rate:.0f} | {b.p50_ms:.1f} / "
                f"{b.p99_ms:.1f} | {b.errors} | {f.rate:.0f} | {f.p50_ms:.1f} / "
                f"{f.p99_ms:.1f} | {f.errors} | **{ratio:.2f}x** ({ratios}) |"
            )
    finally:
        for proc in procs.values():
            stop(proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generator", choices=["wrk", "hey"], default="wrk")
    parser.add_argument("--seconds", type=float, default=4, help="per run, wrk")
    parser.add_argument("--requests", type=int, default=2000, help="per run, hey")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--skip-wide", action="store_true")
    args = parser.parse_args()
    if shutil.which(args.generator) is None:
        raise SystemExit(
            f"{args.generator} is not installed: apt-get install {args.generator}"
        )
    settings = get_settings()
    os.environ.update(client_env(settings))
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    name = load_params(REPO / "params.yaml").registry.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    row = pd.read_parquet(REPO / "data/prepared/test.parquet").drop(columns="label")
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        folder = Path(tmp)
        body = folder / "body.json"
        body.write_text(json.dumps({"instances": [row.iloc[0].tolist()]}))
        models = [name] if args.skip_wide else [name, WIDE]
        if not args.skip_wide:
            run_params = client.get_run(champion.run_id).data.params
            macs = register_wide(client, run_params, folder / "wide")
            print(f"{WIDE}: {macs / 1e6:.1f} M multiply-adds per row")
        table = []
        for model in models:
            params = params_for(model, folder)
            table += measure(model, params, body, args.levels, args)
    print(
        "\n| model | concurrency | BentoML req/s | p50 / p99 ms | errors | FastAPI "
        "req/s | p50 / p99 ms | errors | ratio, median (each round) |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(table))


if __name__ == "__main__":
    main()
