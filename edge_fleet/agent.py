"""The device agent: enroll, check in, update through TUF into an A/B slot, smoke
test, switch atomically, run inference and report telemetry.

One `Agent` is one device; `step()` is one poll cycle (synchronous, so the
simulator runs many in threads). On disk, per device:

    <home>/state.json   token, active slot, what each slot holds, failed versions
    <home>/tuf/         TUF's trusted metadata (starts from the factory root.json)
    <home>/a/, <home>/b/  the two model slots

`state.json` is replaced atomically (write + rename) and only after the new slot
passed its smoke test, so a device killed at any point restarts on a working model.
A version that failed here is not retried until the fleet assigns another one.

    python -m edge_fleet.agent --server URL --device-id ID --profile mcu \
        --cohort north --home DIR --root root.json --samples test.parquet
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from components.config import FleetConfig, load_params
from components.runtime import LiteRtModel, OnnxRuntimeModel, load_runtime
from edge_fleet.tuf_repo import ROLLOUT, STABLE, in_scope
from stack.settings import get_settings

SMOKE_ROWS = 8
LATENCY_ROWS = 8
# Simulated devices that run the same file share one loaded runtime (keyed by the
# file's sha256), so a thousand devices fit in one process; a failed load is never
# cached, so every device still finds a broken file broken.
_RUNTIMES: dict[str, OnnxRuntimeModel | LiteRtModel] = {}
_RUNTIMES_LOCK = threading.Lock()


class CutLink(Exception):
    """The simulated network dropped the connection."""


class PowerLoss(BaseException):
    """The simulated device lost power: nothing after this point runs."""


class ResumingFetcher(FetcherInterface):
    """TUF's network layer on httpx: the device token on every request, and a
    download cut in the middle resumes where it stopped (HTTP Range)."""

    def __init__(
        self,
        http: httpx.Client,
        token: str,
        *,
        attempts: int = 5,
        cut: Callable[[str], int | None] | None = None,
        power_loss: bool = False,
    ) -> None:
        self.http, self.token, self.attempts, self.cut = http, token, attempts, cut
        self.power_loss = power_loss  # a cut is the device dying, not the link
        self.bytes_received = 0
        self.resumes = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        received, failures = 0, 0
        cut_at = self.cut(url) if self.cut else None
        while True:
            headers = {"Authorization": f"Bearer {self.token}"}
            if received:
                headers["Range"] = f"bytes={received}-"
            try:
                with self.http.stream("GET", url, headers=headers) as reply:
                    if reply.status_code >= 400:
                        raise tuf_errors.DownloadHTTPError(
                            f"{url}: HTTP {reply.status_code}", reply.status_code
                        )
                    if received and reply.status_code != 206:
                        raise tuf_errors.DownloadError(f"{url}: range not honoured")
                    for chunk in reply.iter_bytes(16384):
                        if cut_at is not None and received + len(chunk) > cut_at:
                            part = chunk[: cut_at - received]
                            received += len(part)
                            self.bytes_received += len(part)
                            cut_at = None
                            if part:
                                yield part
                            if self.power_loss:
                                raise PowerLoss(url)
                            raise CutLink(url)
                        received += len(chunk)
                        self.bytes_received += len(chunk)
                        yield chunk
                return
            except (CutLink, httpx.TransportError) as exc:
                failures += 1
                if failures >= self.attempts:
                    raise tuf_errors.DownloadError(
                        f"{url}: {failures} broken connections"
                    ) from exc
                self.resumes += 1


@dataclass
class DataStream:
    """The device's local inputs: rows drawn from a labelled set, optionally
    shifted (the drift a cohort can be given), within what the sensor can report
    (`value_range`, the data contract's feature range, when given)."""

    x: np.ndarray
    seed: int
    drift: str | None = None
    strength: float = 0.0
    value_range: tuple[float, float] | None = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def batch(self, n: int) -> np.ndarray:
        rows = self.x[self.rng.integers(0, len(self.x), n)].astype(np.float32)
        rows = shift(rows, self.drift, self.strength, self.rng)
        if self.value_range is not None:
            rows = np.clip(rows, *self.value_range)
        return rows


def shift(
    rows: np.ndarray, kind: str | None, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Brightness (add), noise (gaussian) or rotation (of square images)."""
    if kind is None or strength == 0:
        return rows
    if kind == "brightness":
        return rows + strength
    if kind == "noise":
        return rows + rng.normal(0, strength, rows.shape).astype(np.float32)
    if kind == "rotation":
        side = math.isqrt(rows.shape[1])
        turns = max(1, round(strength)) % 4
        return np.rot90(rows.reshape(-1, side, side), turns, axes=(1, 2)).reshape(
            len(rows), -1
        )
    raise ValueError(f"drift {kind!r}: expected brightness, noise or rotation")


@dataclass
class Identity:
    device_id: str
    profile: str
    cohort: str


@dataclass
class Faults:
    """What can go wrong on this simulated device."""

    cut_download: float = 0.0  # chance a download is cut once, midway
    power_loss: bool = False  # the device dies during its next model download
    broken_hardware: bool = False  # every install fails its smoke test


class Agent:
    def __init__(
        self,
        server: str,
        identity: Identity,
        home: Path,
        *,
        factory_root: bytes,
        enroll_key: str,
        cfg: FleetConfig,
        stream: DataStream,
        http: httpx.Client,
        faults: Faults | None = None,
    ) -> None:
        self.server, self.id, self.home = server.rstrip("/"), identity, home
        self.factory_root, self.enroll_key, self.cfg = factory_root, enroll_key, cfg
        self.stream, self.http = stream, http
        self.faults = faults or Faults()
        self.rng = random.Random(identity.device_id)
        home.mkdir(parents=True, exist_ok=True)
        self.state = self._load_state()
        self.known_timestamp: int | None = None
        self.error: str | None = None
        self.failed_version: str | None = None
        self.fetcher: ResumingFetcher | None = None
        self.bytes_received = 0  # metadata and model bytes, all updates
        self.resumes = 0  # downloads resumed after a cut connection

    # -- state ----------------------------------------------------------------

    def _load_state(self) -> dict:
        path = self.home / "state.json"
        if path.exists():
            return json.loads(path.read_text())
        return {"token": None, "active": None, "slots": {}, "failed": {}}

    def _save_state(self) -> None:
        path = self.home / "state.json"
        tmp = path.with_name(".state.json.tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, path)  # the atomic switch

    @property
    def version(self) -> str | None:
        active = self.state["active"]
        return self.state["slots"][active]["version"] if active else None

    def _model_path(self, slot: str) -> Path:
        return self.home / slot / self.state["slots"][slot]["filename"]

    # -- one poll cycle -----------------------------------------------------------

    def enroll(self) -> None:
        if self.state["token"]:
            return
        reply = self.http.post(
            f"{self.server}/v1/enroll",
            json={
                "device_id": self.id.device_id,
                "profile": self.id.profile,
                "cohort": self.id.cohort,
            },
            headers={"X-Enroll-Key": self.enroll_key},
        )
        reply.raise_for_status()
        self.state["token"] = reply.json()["token"]
        self._save_state()

    def step(self) -> dict:
        """Check in (with telemetry), then update if the signed metadata changed."""
        self.enroll()
        reply = self.http.post(
            f"{self.server}/v1/devices/{self.id.device_id}/checkin",
            json=self._checkin(),
            headers={"Authorization": f"Bearer {self.state['token']}"},
        )
        reply.raise_for_status()
        answer = reply.json()
        # The hint only says when to look; what to run is decided by TUF below.
        if answer["timestamp_version"] != self.known_timestamp:
            self.update()
        return answer

    def _checkin(self) -> dict:
        body: dict = {
            "current_version": self.version,
            "slot": self.state["active"],
            "health": "failed"
            if self.error
            else ("ok" if self.version else "no_model"),
            "failed_version": self.failed_version,
            "error": self.error[:500] if self.error else None,
        }
        if self.version is not None:
            body["telemetry"] = self.telemetry()
        return body

    def update(self) -> None:
        """Refresh TUF metadata, pick this device's assignment, install it."""
        self.error = None
        self.failed_version = None
        try:
            updater = self._updater()
            updater.refresh()
            self.known_timestamp = json.loads(
                (self.home / "tuf" / "timestamp.json").read_bytes()
            )["signed"]["version"]  # what ngclient just verified and stored
            target = self._assignment(updater)
            if target is not None:
                self._install(updater, target)
        except tuf_errors.RepositoryError as exc:
            self.error = f"refused update: {type(exc).__name__}: {exc}"
        except tuf_errors.DownloadError as exc:
            self.error = f"download failed: {exc}"
        finally:
            if self.fetcher is not None:
                self.bytes_received += self.fetcher.bytes_received
                self.resumes += self.fetcher.resumes

    def _updater(self) -> Updater:
        tuf_dir = self.home / "tuf"
        bootstrap = None
        if not (tuf_dir / "root.json").exists():
            tuf_dir.mkdir(parents=True, exist_ok=True)
            bootstrap = self.factory_root
        self.fetcher = ResumingFetcher(
            self.http,
            self.state["token"],
            cut=self._cut
            if self.faults.cut_download or self.faults.power_loss
            else None,
            power_loss=self.faults.power_loss,
        )
        return Updater(
            metadata_dir=str(tuf_dir),
            metadata_base_url=f"{self.server}/tuf/metadata/",
            target_base_url=f"{self.server}/tuf/targets/",
            fetcher=self.fetcher,
            bootstrap=bootstrap,
        )

    def _cut(self, url: str) -> int | None:
        chance = 1.0 if self.faults.power_loss else self.faults.cut_download
        if "/tuf/targets/" in url and self.rng.random() < chance:
            return self.rng.randint(1, 1024)
        return None

    def _assignment(self, updater: Updater) -> TargetFile | None:
        for channel in (ROLLOUT, STABLE):
            info = updater.get_targetinfo(channel)
            if info is None:
                continue
            custom = (info.custom or {}).get("edgeloop", {})
            if in_scope(custom, self.id.device_id, self.id.cohort, self.id.profile):
                return info
        return None

    def _install(self, updater: Updater, target: TargetFile) -> None:
        custom = target.custom["edgeloop"]
        version, sha = str(custom["version"]), target.hashes["sha256"]
        active = self.state["active"]
        slots = self.state["slots"]
        if active and slots[active]["sha256"] == sha:
            if slots[active]["version"] != version:
                # The same file released as a new version (a re-registered model):
                # nothing to download or load, the device now runs that version.
                slots[active]["version"] = version
                self._save_state()
            return
        if self.state["failed"].get(sha):
            self.error = f"v{version} failed here before: {self.state['failed'][sha]}"
            self.failed_version = version
            return
        spare = "b" if active == "a" else "a"
        path = self.home / spare / custom["filename"]
        if slots.get(spare, {}).get("sha256") != sha or not path.exists():
            slots.pop(spare, None)  # the spare slot is being rewritten
            self._save_state()
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in path.parent.iterdir():
                old.unlink()
            updater.download_target(target, filepath=str(path))
        problem = self._smoke_test(path, sha)
        if problem is not None:
            self.state["failed"][sha] = problem
            self._save_state()
            self.error = f"v{version} not installed: {problem}"
            self.failed_version = version
            return
        slots[spare] = {"version": version, "sha256": sha, "filename": path.name}
        self.state["active"] = spare
        self._save_state()

    def _smoke_test(self, path: Path, sha: str) -> str | None:
        """Load the file in its runtime and answer the bundled samples."""
        if self.faults.broken_hardware:
            return "smoke test: device fault (simulated)"
        try:
            runtime = _runtime(path, sha)
            logits = runtime.logits(self.stream.x[:SMOKE_ROWS].astype(np.float32))
        except Exception as exc:  # noqa: BLE001 - any failure to load or run
            return f"load/inference failed: {type(exc).__name__}: {str(exc)[:200]}"
        if logits.shape[0] != SMOKE_ROWS or not np.isfinite(logits).all():
            return f"smoke test: bad output shape {logits.shape} or non-finite values"
        return None

    # -- inference and telemetry ----------------------------------------------------

    def telemetry(self) -> dict:
        active = self.state["active"]
        runtime = _runtime(
            self._model_path(active), self.state["slots"][active]["sha256"]
        )
        x = self.stream.batch(self.cfg.telemetry_batch)
        latencies = []
        for row in x[:LATENCY_ROWS]:
            start = time.perf_counter()
            runtime.logits(row[None, :])
            latencies.append((time.perf_counter() - start) * 1000)
        logits = runtime.logits(x).astype(np.float64)
        bad = ~np.isfinite(logits).all(axis=1)
        logits = logits[~bad]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels, counts = np.unique(probs.argmax(axis=1), return_counts=True)
        body = {
            "version": self.version,
            "inferences": len(x),
            "errors": int(bad.sum()),
            "latency_ms_median": float(np.median(latencies)),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
            "confidence_mean": float(probs.max(axis=1).mean()) if len(probs) else 0.0,
            "class_counts": {
                str(k): int(v) for k, v in zip(labels, counts, strict=True)
            },
            "feature_stats": {
                "mean": _rounded(x.mean(axis=0)),
                "std": _rounded(x.std(axis=0)),
                "min": _rounded(x.min(axis=0)),
                "max": _rounded(x.max(axis=0)),
            },
        }
        if self.id.cohort in self.cfg.sample_cohorts:
            body["samples"] = [_rounded(r) for r in x[:8]]
        return body


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def _runtime(path: Path, sha: str) -> OnnxRuntimeModel | LiteRtModel:
    with _RUNTIMES_LOCK:
        cached = _RUNTIMES.get(sha)
    if cached is not None:
        return cached
    runtime = load_runtime(path)
    with _RUNTIMES_LOCK:
        _RUNTIMES[sha] = runtime
    return runtime


def poll_delay(cfg: FleetConfig, failures: int, rng: random.Random) -> float:
    """The next check-in: poll_s with jitter; exponential backoff after failures."""
    base = (
        cfg.poll_s
        if failures == 0
        else min(cfg.max_backoff_s, cfg.poll_s * 2**failures)
    )
    return base * (1 + rng.uniform(-cfg.poll_jitter, cfg.poll_jitter))


def main() -> None:
    import pandas as pd  # the test split this process reads its inputs from

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="factory root.json")
    parser.add_argument("--samples", type=Path, required=True, help="parquet, label")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=0, help="stop after N (0: never)")
    args = parser.parse_args()
    settings = get_settings()
    if settings.fleet_enroll_key is None:
        parser.error("EDGELOOP_FLEET_ENROLL_KEY is not set")
    enroll_key = settings.fleet_enroll_key.get_secret_value()
    params = load_params(args.params)
    profile = params.optimize.profiles.get(args.profile)
    if profile is None:
        parser.error(f"--profile {args.profile!r}: not in optimize.profiles")
    if profile.runtime_memory_mb:  # the device's memory budget, for this process
        limit = profile.runtime_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    frame = pd.read_parquet(args.samples)
    stream = DataStream(frame.drop(columns=params.data.label_column).to_numpy(), seed=0)
    agent = Agent(
        args.server,
        Identity(args.device_id, args.profile, args.cohort),
        args.home,
        factory_root=args.root.read_bytes(),
        enroll_key=enroll_key,
        cfg=params.fleet,
        stream=stream,
        http=httpx.Client(timeout=30),
    )
    failures, steps = 0, 0
    while not args.steps or steps < args.steps:
        try:
            agent.step()
            failures = 0
        except httpx.HTTPError as exc:
            failures += 1
            print(f"check-in failed ({exc}); backing off", flush=True)  # noqa: T201
        steps += 1
        time.sleep(poll_delay(params.fleet, failures, agent.rng))


if __name__ == "__main__":
    main()
