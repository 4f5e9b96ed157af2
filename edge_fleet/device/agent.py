"""The device agent: enroll, check in, update through TUF into an A/B slot, smoke
test, switch atomically, run inference and report telemetry.

One `Agent` is one device; `step()` is one poll cycle (synchronous, so a simulator
runs many in threads). On disk, per device (see slots.py):

    <home>/state.json   token, active slot, what each slot holds, failed versions
    <home>/tuf/         TUF's trusted metadata (starts from the factory root.json)
    <home>/a/, <home>/b/  the two model slots

`state.json` changes only after the new slot passed its smoke test, so a device
killed at any point restarts on a working model. A version that failed here is not
retried until the fleet assigns another one. The command that runs one agent as a
process is command.py (`python -m edge_fleet.device`).
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater

from edge_fleet.device import audio
from edge_fleet.device.benchmark import compare
from edge_fleet.device.fetcher import ResumingFetcher
from edge_fleet.device.files import commit_file
from edge_fleet.device.inference import (
    RuntimeCache,
    feature_stats,
    p95,
    predictions,
    rounded,
)
from edge_fleet.device.micro import fit_problem, is_micro
from edge_fleet.device.polling import retry_after_s
from edge_fleet.device.runtime import answer_problem
from edge_fleet.device.scope import ROLLOUT, STABLE, in_scope, profile_target
from edge_fleet.device.seams import (
    Inputs,
    Interference,
    NoInterference,
    Polling,
)
from edge_fleet.device.slots import (
    active_version,
    load_state,
    model_path,
    save_state,
    spare_slot,
)

LATENCY_ROWS = 8
log = logging.getLogger("edgeloop.device")


class EnrollmentError(RuntimeError):
    """The device cannot enroll with what it was given (no code, a code that does
    not allow it): retrying does not help, an operator must act."""


@dataclass
class Identity:
    device_id: str
    profile: str
    cohort: str


class Agent:
    def __init__(
        self,
        server: str,
        identity: Identity,
        home: Path,
        *,
        factory_root: bytes,
        enroll_code: str | None,
        cfg: Polling,
        stream: Inputs,
        http: httpx.Client,
        faults: Interference | None = None,
        runtimes: RuntimeCache | None = None,
        front_end: str | None = None,
    ) -> None:
        self.server, self.id, self.home = server.rstrip("/"), identity, home
        self.factory_root, self.enroll_code, self.cfg = factory_root, enroll_code, cfg
        self.stream, self.http = stream, http
        self.faults: Interference = faults or NoInterference()
        self.runtimes = runtimes or RuntimeCache()
        # "mfcc": the rows are a keyword spotter's (audio.py); its reports
        # summarise each row in 12 numbers, not its 490 inputs.
        self.front_end = front_end
        self.rng = random.Random(identity.device_id)
        home.mkdir(parents=True, exist_ok=True)
        self.state = load_state(home)
        self.known_timestamp: int | None = None
        # When TUF metadata was last verified (monotonic clock; None: not since
        # this process started). Older than fleet.max_metadata_age_s: refreshed
        # whatever the server's hint says, and reported stale when that fails.
        self.verified_at: float | None = None
        self.started_at = time.monotonic()
        self.checked_in_at: float | None = None  # the last accepted check-in
        self.error: str | None = None
        self.failed_version: str | None = None
        self.fetcher: ResumingFetcher | None = None
        self.bytes_received = 0  # metadata and model bytes, all updates
        self.resumes = 0  # downloads resumed after a cut connection
        # The last install's on-device benchmark (benchmark.py), reported with
        # telemetry while that version runs.
        self.benchmark: dict | None = None
        # A telemetry report the server has not taken yet (429, or no answer): sent
        # again at the next check-in, not dropped. Retry-After of the last 429.
        self.unsent: dict | None = None
        self.retry_after_s = 0.0

    @property
    def version(self) -> str | None:
        return active_version(self.state)

    def _save_state(self) -> None:
        save_state(self.home, self.state)

    # -- one poll cycle -----------------------------------------------------------

    def enroll(self) -> None:
        """Once, with the enrollment code an admin issued for this device (or its
        batch): the device's own token is kept in state.json from then on."""
        if self.state["token"]:
            return
        if not self.enroll_code:
            raise EnrollmentError(
                f"{self.id.device_id} is not enrolled and has no enrollment code "
                "(EDGELOOP_FLEET_ENROLL_CODE; `edgeloop fleet enroll-code`)"
            )
        reply = self.http.post(
            f"{self.server}/v1/enroll",
            json={
                "device_id": self.id.device_id,
                "profile": self.id.profile,
                "cohort": self.id.cohort,
            },
            headers={"X-Enroll-Code": self.enroll_code},
        )
        if reply.status_code in (401, 403, 409):  # the code will not do: say why
            raise EnrollmentError(
                f"enrollment of {self.id.device_id} refused: {reply.status_code} "
                f"{reply.text[:300]}"
            )
        reply.raise_for_status()
        self.state["token"] = reply.json()["token"]
        self._save_state()

    def step(self) -> dict:
        """Check in (with telemetry), then update if the signed metadata changed."""
        self.enroll()
        try:
            reply = self.http.post(
                f"{self.server}/v1/devices/{self.id.device_id}/checkin",
                json=self._checkin(),
                headers={"Authorization": f"Bearer {self.state['token']}"},
            )
        except httpx.TransportError:
            raise  # no answer: the report goes again at the next check-in
        except Exception:
            self.unsent = None  # a report that cannot be sent is not tried again
            raise
        if reply.status_code == 429:  # over its budget: wait as told, keep the report
            self.retry_after_s = retry_after_s(reply.headers.get("Retry-After"))
            log.warning("check-in refused (429): again in %g s", self.retry_after_s)
            return {"retry_after_s": self.retry_after_s}
        self.unsent = None
        reply.raise_for_status()
        self.checked_in_at = time.monotonic()
        answer = reply.json()
        # The hint only says when to look (an unsigned number a man in the middle
        # can repeat); what to run is decided by TUF below, and the metadata is
        # refreshed at least every fleet.max_metadata_age_s whatever the hint.
        if (
            answer["timestamp_version"] != self.known_timestamp
            or self.verified_at is None
            or self.metadata_age() >= self.cfg.max_metadata_age_s
        ):
            self.update()
        return answer

    def metadata_age(self) -> float:
        """Seconds since TUF metadata was last verified (or, before it was, since
        this process started)."""
        return time.monotonic() - (self.verified_at or self.started_at)

    def checkin_age(self) -> float | None:
        """Seconds since the server last accepted a check-in (None: not yet)."""
        if self.checked_in_at is None:
            return None
        return round(time.monotonic() - self.checked_in_at, 1)

    def health(self) -> str:
        if self.metadata_age() > self.cfg.max_metadata_age_s:
            return "stale_metadata"
        if self.error:
            return "failed"
        return "ok" if self.version else "no_model"

    def _checkin(self) -> dict:
        body: dict = {
            "current_version": self.version,
            "slot": self.state["active"],
            "health": self.health(),
            "failed_version": self.failed_version,
            "error": self.error[:500] if self.error else None,
        }
        if self.version is not None:
            try:
                report = self.unsent or self.telemetry()
                if report is not None:
                    body["telemetry"] = self.unsent = report
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                problem = f"telemetry failed: {type(exc).__name__}: {exc}"[:500]
                log.warning("%s", problem)
                body |= {"health": "failed", "error": problem}
        return body

    def update(self) -> None:
        """Refresh TUF metadata, pick this device's assignment, install it."""
        self.error = None
        self.failed_version = None
        try:
            updater = self._updater()
            updater.refresh()
            self.verified_at = time.monotonic()
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
        except Exception as exc:  # noqa: BLE001 - a full disk, a bad file: reported
            self.error = f"update failed: {type(exc).__name__}: {exc}"
        finally:
            if self.error:
                log.warning("%s", self.error)
            if self.fetcher is not None:
                self.bytes_received += self.fetcher.bytes_received
                self.resumes += self.fetcher.resumes

    def _updater(self) -> Updater:
        tuf_dir = self.home / "tuf"
        bootstrap = None
        if not (tuf_dir / "root.json").exists():
            tuf_dir.mkdir(parents=True, exist_ok=True)
            bootstrap = self.factory_root
        faults = self.faults
        self.fetcher = ResumingFetcher(
            self.http,
            self.state["token"],
            cut=lambda url: faults.cut_at(url, self.rng),
            on_cut=faults.on_cut,
        )
        return Updater(
            metadata_dir=str(tuf_dir),
            metadata_base_url=f"{self.server}/tuf/metadata/",
            target_base_url=f"{self.server}/tuf/targets/",
            fetcher=self.fetcher,
            bootstrap=bootstrap,
        )

    def _assignment(self, updater: Updater) -> TargetFile | None:
        for channel in (ROLLOUT, STABLE):
            own = updater.get_targetinfo(profile_target(channel, self.id.profile))
            info = own or updater.get_targetinfo(channel)
            if info is None:
                continue
            custom = (info.custom or {}).get("edgeloop", {})
            if in_scope(custom, self.id.device_id, self.id.cohort, self.id.profile):
                return info
        return None

    def _install(self, updater: Updater, target: TargetFile) -> None:
        custom = target.custom["edgeloop"]
        version, sha = str(custom["version"]), target.hashes["sha256"]
        if self._already_running(version, sha):
            return
        if self.state["failed"].get(sha):
            self.error = f"v{version} failed here before: {self.state['failed'][sha]}"
            self.failed_version = version
            return
        spare = spare_slot(self.state)
        path = self.home / spare / custom["filename"]
        slots = self.state["slots"]
        if slots.get(spare, {}).get("sha256") != sha or not path.exists():
            slots.pop(spare, None)  # the spare slot is being rewritten
            self._save_state()
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in path.parent.iterdir():
                old.unlink()
            log.info("v%s: downloading into slot %s", version, spare)
            part = path.with_name(f".{path.name}.part")
            updater.download_target(target, filepath=str(part))  # verifies it
            commit_file(part, path)
            log.info("v%s: downloaded and verified (%d bytes)", version, target.length)
        problem = self._smoke_test(path, sha)
        if problem is not None:
            self.state["failed"][sha] = problem
            self._save_state()
            self.error = f"v{version} not installed: {problem}"
            self.failed_version = version
            return
        self.benchmark = self._benchmark(path, sha, version)
        log.info("v%s: smoke test passed (%s)", version, self.benchmark)
        slots[spare] = {"version": version, "sha256": sha, "filename": path.name}
        self.state["active"] = spare
        self._save_state()
        log.info("v%s: switched to slot %s", version, spare)

    def _already_running(self, version: str, sha: str) -> bool:
        """The file is the active slot's. Released as a new version (a re-registered
        model): nothing to download or load, the device now runs that version."""
        active = self.state["active"]
        slot = self.state["slots"].get(active) if active else None
        if slot is None or slot["sha256"] != sha:
            return False
        if slot["version"] != version:
            slot["version"] = version
            self._save_state()
        return True

    def _smoke_test(self, path: Path, sha: str) -> str | None:
        """Load the file in its runtime and answer the bundled samples in every
        batch size this device runs: one row (latency, a single reading) and the
        telemetry batch (a model that takes only a fixed batch fails here, not in
        use)."""
        fault = self.faults.smoke_test_fault()
        if fault is not None:
            return fault
        if is_micro(path):  # TFLM in its own process first: a short arena can crash
            problem = fit_problem(path, self.runtimes.board)
            if problem is not None:
                return f"smoke test: {problem}"
        for rows in sorted({1, self.cfg.telemetry_batch}):
            x = self.stream.x[np.arange(rows) % len(self.stream.x)].astype(np.float32)
            try:
                logits = self.runtimes.get(path, sha).logits(x)
            except Exception as exc:  # noqa: BLE001 - any failure to load or run
                return (
                    f"smoke test, batch of {rows}: load/inference failed: "
                    f"{type(exc).__name__}: {str(exc)[:200]}"
                )
            if (problem := answer_problem(logits, rows)) is not None:
                return f"smoke test, batch of {rows}: {problem}"
        return None

    def _benchmark(self, path: Path, sha: str, version: str) -> dict:
        """The candidate against the file running now, timed together."""
        active = self.state["active"]
        current = None
        if active and active in self.state["slots"]:
            slot = self.state["slots"][active]
            current = self.runtimes.get(
                model_path(self.home, self.state, active), slot["sha256"]
            )
        times = compare(
            self.runtimes.get(path, sha), current, self.stream.x.astype(np.float32)
        )
        return {"version": version, "previous_version": self.version} | times

    # -- inference and telemetry ----------------------------------------------------

    def _feature_stats(self, x: np.ndarray, runtime: object) -> dict:
        if self.front_end == audio.SUMMARY and x.shape[1] == len(audio.feature_names()):
            stats = feature_stats(audio.row_summaries(x))
            return stats | {"summary": audio.SUMMARY}
        return feature_stats(x, getattr(runtime, "inputs", None))

    def telemetry(self) -> dict | None:
        """A summary of the rows run since the last report (None: there were
        none: a device whose application asked nothing)."""
        x = self.stream.batch(self.cfg.telemetry_batch)
        if not len(x):
            return None
        active = self.state["active"]
        runtime = self.runtimes.get(
            model_path(self.home, self.state, active),
            self.state["slots"][active]["sha256"],
        )
        latencies = []
        for row in x[:LATENCY_ROWS]:
            start = time.perf_counter()
            runtime.logits(row[None, :])
            latencies.append((time.perf_counter() - start) * 1000)
        body = {
            "version": self.version,
            # statistics, not numpy: np.percentile imports numpy.ma (7 MB resident)
            "latency_ms_median": statistics.median(latencies),
            "latency_ms_p95": p95(latencies),
            **predictions(runtime.logits(x), runtime.classes),
            "feature_stats": self._feature_stats(x, runtime),
        }
        if self.benchmark and self.benchmark["version"] == self.version:
            body["benchmark"] = self.benchmark
        if self.id.cohort in self.cfg.sample_cohorts:
            # Rows with a gap (NaN) are not sent: a report must be finite numbers.
            complete = [rounded(r) for r in x[:8] if np.isfinite(r).all()]
            if complete:
                body["samples"] = complete
        return body
