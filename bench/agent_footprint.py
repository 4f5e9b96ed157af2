"""The device agent's footprint, as a device would run it: `edgeloop-agent` built from
the repository and installed into a fresh venv with one runtime extra (`onnx`:
ONNX Runtime with an MLP fitted on the digits; `litert`: LiteRT with a Keras
model's full-integer TFLite file, converted by the optimize stage's code; `micro`:
TensorFlow Lite Micro with the same files as a board of the mcu profile runs them,
in its profile's arena), then run as its own process against a fleet server on
loopback. For each runtime:

- installed size: the venv's `du` (files copied, not linked to uv's cache), and the
  wheel's own size;
- cold start: the process started -> its first accepted check-in, and -> its first
  local answer with the stable version (a fresh device: enroll done, no model yet);
- resident memory (VmRSS) idle with the model loaded, and the highest while its
  application asks 100 rows a second for 10 s (with the answers' p50/p99);
- a new stable version (retarget) -> the agent answering with it (the agent polls
  every `fleet.poll_s`, 2 s by default, with +-50% jitter).

    .venv/bin/python -m bench.agent_footprint [--poll-s 2.0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import yaml
from sklearn.datasets import load_digits

from bench.fleet_scale import mlp_onnx, say, start
from components.config import load_params
from edge_fleet import keys
from edge_fleet.client import FleetAdmin
from stack import agent_dist
from stack.net import free_port

REPO = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin"


def keras_int8(path: Path, seed: int) -> Path:
    import keras

    from components.optimization.tflite import convert_int8

    digits = load_digits()
    x = digits.data.astype(np.float32)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Rescaling(1 / 16),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, digits.target, epochs=20, batch_size=64, verbose=0)
    return convert_int8(model, path, x[:300])


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def status(port: int) -> dict | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()
    except httpx.HTTPError:
        return None


def wait(condition, max_s: float = 120, step: float = 0.01) -> float:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > max_s:
            raise SystemExit("bench: not reached in time")
        time.sleep(step)
    return time.monotonic() - t0


class Application:
    """Rows to the agent's port at `rate` a second, paced; keeps the answers."""

    def __init__(self, port: int, rows: np.ndarray, rate: float) -> None:
        self.url, self.rows, self.period = (
            f"http://127.0.0.1:{port}/predict",
            rows,
            1 / rate,
        )
        self.answers: list[tuple[float, str, float]] = []  # (when, version, ms)
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i, due = 0, time.monotonic()
            while not self.stop.is_set():
                t0 = time.monotonic()
                reply = client.post(
                    self.url, json={"row": self.rows[i % len(self.rows)].tolist()}
                )
                ms = (time.monotonic() - t0) * 1000
                if reply.status_code == 200:
                    self.answers.append((time.monotonic(), reply.json()["version"], ms))
                else:
                    self.failures += 1
                i += 1
                due += self.period
                time.sleep(max(0.0, due - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def measure(  # noqa: PLR0915 - one measured story, top to bottom
    extra: str, models: tuple[Path, Path], poll_s: float, work: Path
) -> dict:
    """One runtime, top to bottom, against its own fleet server."""
    wheel = agent_dist.build_wheel(work / "dist")
    command = agent_dist.make_venv(work / f"venv-{extra}", wheel, extra)
    out = {
        "extra": extra,
        "venv_mb": du(work / f"venv-{extra}") / 2**20,
        "wheel_kb": wheel.stat().st_size / 1024,
    }
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["fleet"] |= {"poll_s": poll_s}
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    params = load_params(params_file)
    cfg = params.fleet
    keys.init(
        work / "fleet" / "tuf", work / "fleet" / "keys", work / "root-keys",
        threshold=cfg.root_threshold, keys=cfg.root_keys,
        expiry=timedelta(days=cfg.root_expiry_days),
    )  # fmt: skip
    port, local = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [sys.executable, "-m", "edge_fleet.server", "--port", str(port),
         "--state-dir", str(work / "fleet"), "--params", str(params_file)],
        f"{url}/health",
        {"EDGELOOP_FLEET_ADMIN_TOKEN": ADMIN},
    )  # fmt: skip
    admin = FleetAdmin(url, ADMIN)
    agent = None
    # A board (mcu, TFLM in its profile's arena) for [micro]; a gateway otherwise.
    profile = "mcu" if extra == "micro" else "gateway"
    mcu = params.optimize.profiles["mcu"]
    board = (
        {"arena_kb": int(mcu.max_arena_kb or 0), "flash_kb": int(mcu.max_flash_kb or 0)}
        if extra == "micro"
        else {}
    )
    try:
        upload = {
            "model": params.registry.model_name,
            "variant": extra,
            "profiles": [profile],
            "features": 64,
        }
        admin.upload("1", models[0], **upload)
        admin.retarget("1", "bench")
        rows = load_digits().data.astype(np.float32)
        np.save(work / "samples.npy", rows[:64])
        settings = work / "agent.toml"
        settings.write_text(
            "".join(
                f"{k} = {json.dumps(v)}\n"
                for k, v in {
                    "server": url, "device_id": "gw-bench", "profile": profile,
                    "cohort": cfg.cohorts[0], "home": str(work / "device"),
                    "root": str(work / "fleet" / "tuf" / "metadata" / "1.root.json"),
                    "samples": str(work / "samples.npy"), "inference_port": local,
                    "poll_s": poll_s,
                }.items() | board.items()
            )
        )  # fmt: skip
        code = admin.enrollment_code(
            profiles=[profile], cohorts=cfg.cohorts, devices=1, device_id="gw-bench"
        )["code"]
        subprocess.run(
            [str(command), "--config", str(settings), "enroll", "--code", code],
            check=True,
            capture_output=True,
        )
        t0 = time.monotonic()
        agent = subprocess.Popen(
            [str(command), "--config", str(settings), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait(
            lambda: (
                (s := status(local)) is not None and s["last_checkin_s_ago"] is not None
            )
        )
        out["first_checkin_s"] = time.monotonic() - t0
        wait(lambda: (s := status(local)) is not None and s["version"] == "1")
        out["first_answer_s"] = time.monotonic() - t0
        time.sleep(5)
        out["rss_idle_mb"] = rss_mb(agent.pid)
        app = Application(local, rows[64:], rate=100)
        peak, t_end = 0.0, time.monotonic() + 10
        while time.monotonic() < t_end:
            peak = max(peak, rss_mb(agent.pid))
            time.sleep(0.25)
        ms = [a[2] for a in app.answers]
        out |= {
            "rss_100_per_s_mb": peak,
            "answered_per_s": len(ms) / 10,
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }
        admin.upload("2", models[1], **upload)
        t1 = time.monotonic()
        admin.retarget("2", "bench")
        wait(lambda: any(v == "2" and when > t1 for when, v, _ in app.answers[-5:]))
        out["new_version_s"] = time.monotonic() - t1
        app.close()
        out["failed_requests"] = app.failures
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=30)
        os.killpg(server.pid, signal.SIGTERM)  # start() made it a session leader
        server.wait(timeout=30)
    return out


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"
    return f"`[{value}]`" if isinstance(value, str) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poll-s", type=float, default=2.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-agent-bench-"))
    say(f"work folder {work}")
    onnx = (mlp_onnx(work / "v1.onnx", 128, 0), mlp_onnx(work / "v2.onnx", 128, 1))
    litert = (keras_int8(work / "v1.tflite", 0), keras_int8(work / "v2.tflite", 1))
    rows = []
    micro = tuple(  # the same full-integer files, named for TFLM
        Path(shutil.copyfile(f, f.with_name(f"{f.stem}.micro.tflite"))) for f in litert
    )
    for extra, models in (("onnx", onnx), ("litert", litert), ("micro", micro)):
        say(f"edgeloop-agent[{extra}]")
        rows.append(measure(extra, models, args.poll_s, work / extra))
    dev = du(REPO / ".venv") / 2**20 if (REPO / ".venv").exists() else float("nan")
    columns = {
        "extra": "extra", "venv_mb": "venv MB", "wheel_kb": "wheel KB",
        "first_checkin_s": "first check-in s", "first_answer_s": "first answer s",
        "rss_idle_mb": "RSS idle MB", "rss_100_per_s_mb": "RSS at 100/s MB",
        "answered_per_s": "answered/s", "p50_ms": "p50 ms", "p99_ms": "p99 ms",
        "new_version_s": "new version -> answering s", "failed_requests": "failed",
    }  # fmt: skip
    lines = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_cell(r[k]) for k in columns) + " |" for r in rows),
        f"\nthe development environment (.venv): {dev:.0f} MB; poll_s {args.poll_s}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
