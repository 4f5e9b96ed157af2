"""Local inference for the device's own application, on a loopback port: one row in,
the class and its confidence out, from the model the agent has installed (whichever
slot is active at that moment). The rows asked about are what the agent's telemetry
summarises, so on a real device the reports describe the device's own inputs.

    POST /predict  {"row": [0.0, 3.5, null, ...]}   (null: a gap the model fills)
      200 {"class": "3", "confidence": 0.97, "version": "2"}
      400 {"error": "..."}  503 while no model is installed
    POST /listen   a WAV clip (1 s, 16 kHz, 16-bit mono) as the body, for a keyword
      spotter: the MFCC front end the model was trained on (audio.py), then as
      /predict; 400 naming another rate, length or format
    GET  /status   version, slots, last check-in, metadata age, health

Standard library only (http.server): the agent's footprint stays small."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import numpy as np

from edge_fleet.device import audio
from edge_fleet.device.inputs import RecordedInputs
from edge_fleet.device.seams import Polling
from edge_fleet.device.slots import model_path

if TYPE_CHECKING:
    from edge_fleet.device.agent import Agent

MAX_BODY = 64 * 1024
log = logging.getLogger("edgeloop.device")


class LocalInputs:
    """What telemetry summarises: the rows the application asked about since the
    last report (up to `capacity`, oldest dropped). `x` are the smoke-test samples.
    With `replay`, a device with no application yet reports on its samples."""

    def __init__(self, samples: np.ndarray, capacity: int, *, replay: bool) -> None:
        self.x = samples
        self._rows: deque[np.ndarray] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._replay = RecordedInputs(samples, seed=0) if replay else None

    def record(self, row: np.ndarray) -> None:
        with self._lock:
            self._rows.append(row)

    def batch(self, n: int) -> np.ndarray:
        with self._lock:
            rows = [self._rows.popleft() for _ in range(min(n, len(self._rows)))]
        if rows:
            return np.stack(rows).astype(np.float32)
        if self._replay is not None:
            return self._replay.batch(n)
        return np.empty((0, self.x.shape[1]), np.float32)


class NoModel(RuntimeError):
    pass


def answer(agent: Agent, row: list, *, clip: bool = False) -> dict:
    """The active model's class and confidence for one row (a gap: None); with
    `clip`, the row is a clip's MFCC numbers, refused by a model of other rows."""
    state = agent.state
    active = state["active"]
    slot = state["slots"].get(active) if active else None
    if slot is None:
        raise NoModel("no model installed yet")
    runtime = agent.runtimes.get(model_path(agent.home, state, active), slot["sha256"])
    if clip and runtime.features != len(row):  # as serving's /listen says it
        raise ValueError(
            f"version {slot['version']} takes rows of {runtime.features} features, "
            "not audio clips: use /predict"
        )
    x = _row(row, runtime.features)
    logits = runtime.logits(x)[0].astype(np.float64)
    if not np.isfinite(logits).all():
        raise ValueError("the model answered non-finite values for this row")
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    k = int(probs.argmax())
    if isinstance(agent.stream, LocalInputs):
        agent.stream.record(x[0])
    return {
        "class": str(runtime.classes[k] if runtime.classes else k),
        "confidence": round(float(probs[k]), 6),
        "version": slot["version"],
    }


def _row(row: object, width: int) -> np.ndarray:
    if not isinstance(row, list) or len(row) != width:
        got = len(row) if isinstance(row, list) else type(row).__name__
        raise ValueError(f"row: expected a list of {width} numbers, got {got}")
    values = []
    for i, v in enumerate(row):
        if v is None:
            values.append(np.nan)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            values.append(float(v))
        else:
            raise ValueError(f"row[{i}]: expected a number or null, got {v!r}")
    x = np.asarray([values], np.float64)
    finite = np.isfinite(x) | np.isnan(x)
    if not finite.all() or (np.abs(np.nan_to_num(x)) > np.finfo(np.float32).max).any():
        raise ValueError("row: a value is infinite or out of float32's range")
    return x.astype(np.float32)


def overdue_after_s(cfg: Polling) -> float:
    """A check-in older than this is overdue: twice the longest wait between two
    tries (the backoff's cap, plus a poll with its jitter)."""
    return 2 * (cfg.max_backoff_s + cfg.poll_s * (1 + cfg.poll_jitter))


def status(agent: Agent) -> dict:
    age = agent.checkin_age()
    since = age if age is not None else time.monotonic() - agent.started_at
    overdue = since > overdue_after_s(agent.cfg)
    return {
        "device_id": agent.id.device_id,
        "version": agent.version,
        "active_slot": agent.state["active"],
        "slots": agent.state["slots"],
        # the server has not taken a check-in for too long: not healthy, whatever
        # the model does (the fleet cannot see this device)
        "health": "checkin_overdue" if overdue else agent.health(),
        "error": agent.error,
        "last_checkin_s_ago": agent.checkin_age(),
        "metadata_age_s": round(agent.metadata_age(), 1),
    }


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer
    # Keep-alive: an application's connection is served by one thread, not a
    # thread per request (every reply carries its Content-Length).
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold the body back 40 ms on a kept-alive connection.
    disable_nagle_algorithm = True

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/status":
            self._send(200, status(self.server.agent))
        else:
            self._send(404, {"error": f"{self.path}: not found (GET /status)"})

    def do_POST(self) -> None:
        if self.path not in ("/predict", "/listen"):
            self._send(
                404, {"error": f"{self.path}: not found (POST /predict or /listen)"}
            )
            return
        length = self._declared_length()
        if length is None:
            self.close_connection = True
            return
        try:
            data = self.rfile.read(length)
            if self.path == "/listen":  # a clip: audio.ClipError is a ValueError
                row = audio.mfcc_rows(audio.read_wav(data))[0].tolist()
                self._send(200, answer(self.server.agent, row, clip=True))
                return
            body = json.loads(data or b"null")
            if not isinstance(body, dict) or "row" not in body:
                raise ValueError('expected a JSON object {"row": [...]}')
            self._send(200, answer(self.server.agent, body["row"]))
        except NoModel as exc:
            self._send(503, {"error": str(exc)})
        except ValueError as exc:  # json's errors are ValueErrors too
            self._send(400, {"error": str(exc)})

    def _declared_length(self) -> int | None:
        """The body's length, when it is declared and within MAX_BODY; else the
        refusal is sent and None returned. A chunked body is refused (411), not
        read: http.server would read it to the connection's end, unbounded (so
        would a negative Content-Length: 200 MB were buffered)."""
        declared = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or declared is None:
            self._send(411, {"error": "Content-Length required (no chunked body)"})
            return None
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            self._send(
                400,
                {
                    "error": f"Content-Length {declared[:20]!r}: expected "
                    "a whole number of bytes"
                },
            )
            return None
        if length > MAX_BODY:
            self._send(413, {"error": f"body over {MAX_BODY} bytes"})
            return None
        return length

    def log_message(self, format: str, *args: object) -> None:
        log.debug("local inference: " + format, *args)


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, agent: Agent, host: str, port: int) -> None:
        self.agent = agent
        super().__init__((host, port), _Handler)

    def start(self) -> LocalServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        host, port = self.server_address[:2]
        log.info("local inference on http://%s:%d/predict and /listen", host, port)
        return self
