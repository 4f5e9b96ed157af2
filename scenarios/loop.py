"""`edgeloop loop`: the closed loop on this machine, end to end, unattended.

1. the champion goes to a simulated fleet (canary -> waves -> full);
2. drift is injected on one cohort's inputs, and labelled rows of that shifted data
   arrive in `data/incoming/<data name>/` (a labelling team, simulated: training
   rows with the same shift and their true labels);
3. the monitor flow checks drift until its trigger fires and emits the event;
4. the Prefect automation runs the `training_pipeline` deployment on the worker:
   a new data version, a new model, the same gates;
5. a new champion goes out through the webhook, the release flow and the fleet's
   rollout, until every device of the drifting cohort runs it (every one of a
   profile the file is deployable to; the others run what they ran).

It ends with a report: each step's time, the drift share before and after, the
versions, and where to look. Needs `edgeloop up` and a champion (`edgeloop run`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun

from components.config import Params, load_params
from components.errors import ServiceError
from edge_fleet.client import FleetAdmin, stack_fleet_admin
from edge_fleet.device.agent import Agent
from edge_fleet.sim.runner import FleetSpec, run_fleet
from edge_fleet.sim.streams import drift_kind
from flows.monitor import champion_data, monitor
from scenarios.fleet import (
    eligible_profiles,
    ensure_rollout,
    newest_report,
    reported_since,
    spoken,
    stable_version,
    stack_fleet,
)
from scenarios.labelling import label_incoming, pick_cohort
from scenarios.report import LoopReport, accuracy_line, why
from stack.contracts import DriftOutcome, RolloutState, Tag
from stack.services import champion_version, evidently_workspace
from stack.settings import Settings

TRAINING_FLOW = "training_pipeline"  # flows/training.py

# Monitor passes (each on a refilled window) before the loop says the drift was
# not detected.
DETECT_PASSES = 6


@dataclass(frozen=True)
class Drift:
    """The shift the loop injects, and the labelled rows that arrive with it."""

    kind: str
    strength: float
    label_rows: int


@dataclass
class ClosedLoop:
    """One run of the loop on the stack of `settings` (its steps as methods, in the
    order `run_loop` calls them)."""

    settings: Settings
    project: Path
    params: Params
    fleet: FleetAdmin
    agents: list[Agent]
    cohort: str
    drift: Drift
    champion: str
    say: Callable[[str], None]
    report: LoopReport = field(default_factory=LoopReport)
    # The newest registered version when the loop began: a version made before
    # (a manual run left unpromoted) is not the loop's retraining.
    newest: int = 0
    detected_at: datetime | None = None  # when the pass that triggered began

    @property
    def target(self) -> str:
        return f"cohort-{self.cohort}"

    @property
    def drifting(self) -> list[Agent]:
        return [a for a in self.agents if a.id.cohort == self.cohort]

    @property
    def state_file(self) -> Path:
        return self.settings.state_dir / "monitor" / "loop-state.json"

    def current_champion(self) -> str | None:
        return champion_version(self.settings, self.project / "params.yaml")

    def fleet_for(
        self, seconds: float, done: Callable[[], bool] = lambda: False
    ) -> None:
        asyncio.run(run_fleet(self.agents, self.params.fleet, done=done, max_s=seconds))

    def fleet_until(self, max_s: float, done: Callable[[], bool]) -> None:
        """Run the fleet until done(); a wait that runs out says what it awaited."""
        self.fleet_for(max_s, done)
        if not done():
            reports = len(self.fleet.telemetry(self.cohort, 1000))
            raise ServiceError(
                f"cohort {self.cohort}'s devices did not send the reports the loop "
                f"waits for within {max_s:.0f} s ({reports} reports of it in all)",
                hint="see `edgeloop fleet status --devices`",
            )

    def fill_s(self) -> float:
        """What filling the monitor's window should take, with room for a slow
        machine."""
        running = [a for a in self.drifting if a.version is not None]
        per_s = max(len(running) / self.params.fleet.poll_s, 0.1)
        window = self.params.monitoring.device_window_reports
        return 5 * (window / per_s + 2 * self.params.fleet.poll_s) + 30

    def check(self) -> DriftOutcome:
        outcomes = monitor(
            str(self.project),
            workspace_dir=str(evidently_workspace(self.settings)),
            state_file=str(self.state_file),
            fleet_url=self.settings.fleet_url,
            tracking_uri=self.settings.tracking_uri,
        )
        return next(o for o in outcomes if o.target == self.target)

    def champion_on_the_fleet(self) -> None:
        """1. The champion rolled out to the simulated fleet."""
        t0 = time.monotonic()
        for agent in self.agents:
            agent.step()
        name = self.params.registry.model_name
        ensure_rollout(self.settings, name, self.champion, "simulate")

        def everywhere() -> bool:
            profiles = eligible_profiles(self.fleet)
            return (
                stable_version(self.fleet) == self.champion
                and self.fleet.summary()["active_rollout"] is None
                and all(
                    a.version == self.champion
                    for a in self.agents
                    if a.id.profile in profiles
                )
            )

        self.fleet_for(300, everywhere)
        self.report.step(
            "champion on the fleet",
            t0,
            f"v{self.champion} on {len(self.agents)} devices",
        )
        self.say(f"1. v{self.champion} on the fleet ({self.report.steps[-1][1]:.0f} s)")

    def inject_drift(self) -> float:
        """2. Drift on one cohort; labelled rows of it arrive. The monitor's window
        (the cohort's last `device_window_reports` reports) is full of shifted
        reports before the first check: waited for, not assumed from the machine's
        speed. Returns when the drift was injected (monotonic clock)."""
        t0 = time.monotonic()
        window = self.params.monitoring.device_window_reports
        before = newest_report(self.fleet, self.cohort)
        for agent in self.drifting:
            agent.stream.drift, agent.stream.strength = (
                self.drift.kind,
                self.drift.strength,
            )
        labels = self.label(self.drift.label_rows)
        injected_at = time.monotonic()
        self.fleet_until(
            self.fill_s(),
            lambda: reported_since(self.fleet, self.cohort, before, window),
        )
        running = [a for a in self.drifting if a.version is not None]
        self.report.step(
            "drift injected",
            t0,
            f"{self.drift.kind} {self.drift.strength:g} on cohort {self.cohort} "
            f"({len(self.drifting)} devices, {len(running)} running a model); "
            f"{self.drift.label_rows} labelled rows in "
            f"{labels.relative_to(self.project)}",
        )
        self.say(f"2. {self.report.steps[-1][2]}")
        return injected_at

    def detect(self) -> DriftOutcome | None:
        """3. The monitor until its trigger fires (the sequential test flags the
        cohort: monitoring/sequential.py), for at most `DETECT_PASSES` passes of a
        refilled window; None when it did not."""
        t0 = time.monotonic()
        window = self.params.monitoring.device_window_reports
        for _ in range(DETECT_PASSES):
            checked = newest_report(self.fleet, self.cohort)
            started = datetime.now(UTC)
            mine = self.check()
            report = self.report
            report.drift_before = report.drift_before or mine.drift_share
            report.accuracy_before = report.accuracy_before or accuracy_line(
                mine, self.champion
            )
            self.say(
                f"3. monitor: {self.target} drift share {mine.drift_share:.2f}: "
                f"{mine.decision} (checked in {mine.check_s or 0:.3f} s, "
                f"{mine.new_observations} new reports)"
            )
            if mine.trigger:
                self.detected_at = started
                self.report.step(
                    "drift detected",
                    t0,
                    f"event {mine.event_id}; the cohort's check took "
                    f"{mine.check_s or 0:.3f} s",
                )
                return mine
            # The next window refilled: the sequential test takes each report
            # once, and a fleet reporting every few seconds needs more of them
            # than one a device (its alarm level is a month's reports at that
            # rate over monitoring.false_alarm_level).
            self.fleet_until(
                self.fill_s(),
                lambda: reported_since(self.fleet, self.cohort, checked, window),
            )
        self.report.outcome = (
            f"drift on {self.target} did not trigger retraining (against "
            f"{mine.reference})"
        )
        return None

    def eligible_drifting(self) -> list[Agent]:
        """The cohort's devices of a profile the stable file is deployable to (the
        others keep what they run)."""
        profiles = eligible_profiles(self.fleet)
        return [a for a in self.drifting if a.id.profile in profiles]

    def new_champion_everywhere(self) -> bool:
        current = self.current_champion()
        return (
            current is not None
            and current != self.champion
            and stable_version(self.fleet) == current
            and all(a.version == current for a in self.eligible_drifting())
        )

    def stopped_early(self, client: MlflowClient) -> bool:
        """Whether retraining ended without a new version, or the newest version
        failed its gates or its rollout was stopped (the report says which)."""
        name = self.params.registry.model_name
        latest = max(
            client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)
        )
        if latest.version == self.champion or int(latest.version) <= self.newest:
            return self.retraining_ended(client)
        stopped = [
            r
            for r in self.fleet.rollouts()
            if r["version"] == latest.version
            and r["state"] in (RolloutState.ROLLED_BACK, RolloutState.ABORTED)
        ]
        gate = latest.tags.get(Tag.GATE)
        if stopped:
            self.report.outcome = (
                f"v{latest.version}'s rollout was {stopped[-1]['state']}: "
                f"{stopped[-1]['cause']}"
            )
        elif gate and gate != "passed":
            self.report.why = why(latest.tags)
            self.report.outcome = (
                f"v{latest.version} retrained but failed the gates: "
                f"{latest.tags.get(Tag.GATE_FAILURES)}"
            )
        elif gate == "passed" and not latest.tags.get(Tag.PROMOTION, "auto").startswith(
            "auto"
        ):
            self.report.why = why(latest.tags)
            self.report.outcome = (
                f"v{latest.version} retrained and passed the gates, but "
                f"{latest.tags[Tag.PROMOTION]}"
            )
        else:
            return False
        self.report.new_version = latest.version
        return True

    def retrain_and_roll_out(self, max_s: float) -> bool:
        """4.-5. The automation retrains on the worker; a new champion goes out to
        every eligible device of the cohort. False (the report says why) when it
        did not within `max_s`."""
        t0 = time.monotonic()
        client = MlflowClient(self.settings.tracking_uri)
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline and not self.new_champion_everywhere():
            self.fleet_for(10, self.new_champion_everywhere)
            if self.stopped_early(client):
                return False
        self.report.new_version = self.current_champion()
        if not self.new_champion_everywhere():
            self.report.outcome = (
                f"no new champion on cohort {self.cohort} within {max_s:.0f} s "
                f"({self.retraining_said()})"
            )
            return False
        name = self.params.registry.model_name
        self.report.why = why(
            client.get_model_version(name, self.report.new_version).tags
        )
        self.report.step(
            "retrained and rolled out",
            t0,
            f"v{self.report.new_version} on all {len(self.eligible_drifting())} "
            f"devices of {self.cohort} its file is deployable to "
            f"({len(self.drifting)} in the cohort)",
        )
        return True

    def retraining(self) -> list[FlowRun]:
        """The training runs started since the drift was detected, oldest first
        (Prefect's record)."""
        if self.detected_at is None:
            return []
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[TRAINING_FLOW])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(
                        after_=self.detected_at
                    )
                ),
            )
        return sorted(runs, key=lambda r: r.expected_start_time or self.detected_at)

    def retraining_ended(self, client: MlflowClient) -> bool:
        """Whether every retraining run has ended and none made a version (a
        failed or crashed run: the report says why)."""
        runs = self.retraining()
        if not runs or not all(r.state and r.state.is_final() for r in runs):
            return False
        name = self.params.registry.model_name
        if newest_version(client.tracking_uri, name) > self.newest:
            return False  # registered meanwhile
        self.report.outcome = (
            f"retraining ended without a new version: {self.retraining_said(runs)}"
        )
        return True

    def retraining_said(self, runs: list[FlowRun] | None = None) -> str:
        """Where each retraining run is, in words: its name, state and message."""
        runs = self.retraining() if runs is None else runs
        if not runs:
            return "no retraining run started"
        said = []
        for run in runs:
            state = run.state
            name = state.name if state else "no state"
            message = f": {state.message}" if state and state.message else ""
            said.append(f"retraining run {run.name} {name}{message}")
        return "; ".join(said)

    def label(self, rows: int) -> Path:
        """A labelled batch of the drifting cohort's shifted data arrives."""
        return label_incoming(
            self.project,
            self.params,
            self.target,
            drift=self.drift.kind,
            strength=self.drift.strength,
            rows=rows,
        )

    def after(self) -> None:
        """6. The cohort against the new champion's reference, and its accuracy on
        the next labelled batch (the labelling team keeps labelling)."""
        t0 = time.monotonic()
        later = self.label(
            max(
                self.drift.label_rows // 2,
                self.params.monitoring.delayed_labels_min_rows,
            )
        )
        # A window of the cohort's reports from the new version only.
        since = newest_report(self.fleet, self.cohort)
        window = self.params.monitoring.device_window_reports
        new = self.report.new_version
        self.fleet_until(
            self.fill_s(),
            lambda: reported_since(self.fleet, self.cohort, since, window, version=new),
        )
        outcome = self.check()
        self.report.drift_after = outcome.drift_share
        self.report.accuracy_after = accuracy_line(outcome, new)
        self.report.step(
            "after",
            t0,
            f"{self.target} against {outcome.reference}; next labels in "
            f"{later.relative_to(self.project)}",
        )


def run_loop(
    settings: Settings,
    project: Path,
    *,
    devices: int,
    cohort: str,
    drift: str,
    strength: float,
    label_rows: int,
    max_s: float,
    say: Callable[[str], None] = print,
) -> LoopReport:
    params = load_params(project / "params.yaml")
    champion = champion_version(settings, project / "params.yaml")
    if champion is None:
        raise ServiceError("no champion yet", hint="run `edgeloop run` first")
    name = params.registry.model_name
    drift = drift_kind(
        drift, table=params.data.image_shape is None, audio=spoken(params) is not None
    )
    cohort = pick_cohort(
        project, params, cohort, champion_data(settings.tracking_uri, name)
    )
    agents = stack_fleet(
        settings,
        params,
        FleetSpec(devices=devices, prefix=f"loop{int(time.time())}"),
        test_split=project / params.paths.prepared / "test.parquet",
        model_dir=project / params.paths.model,
        home=settings.state_dir / "fleet-sim" / "loop",
    )
    loop = ClosedLoop(
        settings,
        project,
        params,
        stack_fleet_admin(settings),
        agents,
        cohort,
        Drift(drift, strength, label_rows),
        champion,
        say,
        newest=newest_version(settings.tracking_uri, name),
    )
    loop.report.old_version, loop.report.cohort = champion, cohort
    loop.state_file.unlink(missing_ok=True)  # this demo's own trigger history
    loop.champion_on_the_fleet()
    injected_at = loop.inject_drift()
    if loop.detect() is None or not loop.retrain_and_roll_out(max_s):
        return loop.report
    latency = time.monotonic() - injected_at
    loop.after()
    loop.report.outcome = (
        f"loop closed: drift injected -> v{loop.report.new_version} on every device "
        f"of {cohort} in {latency:.0f} s"
    )
    return loop.report


def newest_version(tracking_uri: str, name: str) -> int:
    """The registered model's highest version number (0: none)."""
    versions = MlflowClient(tracking_uri).search_model_versions(f"name='{name}'")
    return max((int(v.version) for v in versions), default=0)
