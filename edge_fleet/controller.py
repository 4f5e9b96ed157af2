"""The rollout controller: canary -> waves -> full, each stage judged on the model as
devices run it, against the previous version on the same devices.

All state is in the database and the TUF repository, so a restarted server goes on
from the recorded stage. `tick()` is called every half second by the server.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from components.config import FleetConfig
from edge_fleet.db import Device, Model, Rollout, Telemetry, now
from edge_fleet.errors import FleetConflict
from edge_fleet.tuf_repo import ROLLOUT, STABLE, FleetRepository, in_scope
from stack.contracts import ACTIVE_ROLLOUT_STATES, RolloutState

ACTIVE = ACTIVE_ROLLOUT_STATES


@dataclass(frozen=True)
class Stage:
    name: str  # canary | wave-1 ... | full
    percent: float
    cohorts: tuple[str, ...] = ()


def stages(cfg: FleetConfig) -> list[Stage]:
    canary = (
        Stage("canary", 0.0, (cfg.canary_cohort,))
        if cfg.canary_cohort
        else Stage("canary", cfg.canary_percent)
    )
    waves = [Stage(f"wave-{i}", p) for i, p in enumerate(cfg.waves, start=1)]
    return [canary, *waves, Stage("full", 100.0)]


def assignment(model: Model, stage: Stage, rollout_id: int | None) -> dict:
    """The signed custom metadata of a channel target."""
    return {
        "version": model.version,
        "variant": model.variant,
        "filename": model.filename,
        "profiles": list(model.profiles),
        "basis_points": round(stage.percent * 100),
        "cohorts": list(stage.cohorts),
        "stage": stage.name,
        "rollout": rollout_id,
    }


@dataclass(frozen=True)
class Cause:
    """Why a stage failed: which check, the value seen, the threshold."""

    check: str
    value: float
    threshold: float
    stage: str
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StageEvidence:
    devices: int
    installed: int
    failed: int
    new: list[Telemetry]
    previous: list[Telemetry]
    prior: dict[str, float] | None = None  # class shares of the new version's data


def judge(  # noqa: PLR0911 - one return per check, in order
    evidence: StageEvidence, stage: str, cfg: FleetConfig, *, timed_out: bool = False
) -> Cause | None:
    """The first failed check of a stage, or None when it is healthy. Devices that
    have not reported count as failed installs only once the stage timed out."""
    checks = cfg.checks
    reported = evidence.installed + evidence.failed
    judged = evidence.devices if timed_out else reported
    success = evidence.installed / judged if judged else 1.0
    if success < checks.min_install_success:
        return Cause(
            "install_success",
            round(success, 4),
            checks.min_install_success,
            stage,
            f"{evidence.installed} of {evidence.devices} devices installed "
            f"({evidence.failed} failed, {evidence.devices - reported} silent)",
        )
    new, old = evidence.new, evidence.previous
    inferences = sum(t.inferences for t in new)
    errors = sum(t.errors for t in new)
    error_rate = errors / inferences if inferences else 0.0
    if error_rate > checks.max_error_rate:
        return Cause(
            "error_rate",
            round(error_rate, 4),
            checks.max_error_rate,
            stage,
            f"{errors} errors in {inferences} inferences",
        )
    if not new or not old:
        return None  # no baseline on these devices (first rollout): install only
    ratio = statistics.median(t.latency_ms_median for t in new) / max(
        statistics.median(t.latency_ms_median for t in old), 1e-6
    )
    if ratio > checks.max_latency_ratio:
        return Cause(
            "latency_ratio",
            round(ratio, 3),
            checks.max_latency_ratio,
            stage,
            "median single-sample latency, new / previous version",
        )
    drop = _weighted_confidence(old) - _weighted_confidence(new)
    if drop > checks.max_confidence_drop:
        return Cause(
            "confidence_drop",
            round(drop, 4),
            checks.max_confidence_drop,
            stage,
            "mean top-1 confidence, previous minus new version",
        )
    before, after = _class_counts(old), _class_counts(new)
    if evidence.prior:
        # Against the classes the new version was trained on: a model that collapses
        # moves away from them; one retrained for drifted inputs moves back towards
        # them, which is a large shift from the previous version, not a failure.
        shift = total_variation(after, evidence.prior) - total_variation(
            before, evidence.prior
        )
        detail = (
            "total variation distance of predicted classes from the training class "
            "shares, new minus previous version"
        )
    else:
        shift = total_variation(before, after)
        detail = "total variation distance of predicted classes, previous vs new"
    if shift > checks.max_class_shift:
        return Cause(
            "class_shift", round(shift, 4), checks.max_class_shift, stage, detail
        )
    return None


def _weighted_confidence(rows: list[Telemetry]) -> float:
    n = sum(t.inferences for t in rows)
    return sum(t.confidence_mean * t.inferences for t in rows) / n if n else 0.0


def _class_counts(rows: list[Telemetry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in rows:
        for label, c in t.class_counts.items():
            counts[label] = counts.get(label, 0) + int(c)
    return counts


def total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    """Between two class distributions given as counts or shares."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in keys)


@dataclass(frozen=True)
class StartOutcome:
    """What a start request did: `started`, or a no-op (`already_rolling_out`,
    `already_stable`); `superseded` is the other version's rollout it aborted."""

    outcome: str
    detail: str
    rollout: Rollout | None
    superseded: Rollout | None = None


class Controller:
    def __init__(self, repo: FleetRepository, cfg: FleetConfig) -> None:
        self.repo, self.cfg = repo, cfg
        self.plan = stages(cfg)

    # -- starting and stopping ---------------------------------------------------

    def stable_version(self) -> str | None:
        return self.repo.channels().get(STABLE, {}).get("version")

    def start(
        self, session: Session, version: str, reason: str, *, supersede: bool = False
    ) -> StartOutcome:
        """Start a rollout of `version`, in one transaction: a no-op that says so
        when it is already rolling out or stable; another version's active rollout
        is a conflict, or, with `supersede`, aborted in the same step (its devices
        are sent the new version's canary, or back to stable, in one publish)."""
        model = session.get(Model, version)
        if model is None:
            raise FleetConflict(f"model version {version} was not uploaded", 404)
        active = session.scalar(select(Rollout).where(Rollout.state.in_(ACTIVE)))
        if active is not None and active.version == version:
            return StartOutcome(
                "already_rolling_out",
                f"rollout {active.id} of v{version} is already {active.state} "
                f"(at {self._stage(active)}): nothing started",
                active,
            )
        if active is not None and not supersede:
            raise FleetConflict(
                f"rollout {active.id} of v{active.version} is {active.state}; "
                "abort or finish it first, or start with supersede: true"
            )
        superseded = None
        if active is not None:
            self._finish(
                active,
                RolloutState.ABORTED.value,
                {
                    "check": "superseded",
                    "detail": f"superseded by v{version}"
                    + (f" ({reason})" if reason else ""),
                    "stage": self._stage(active),
                },
            )
            superseded = active
        if self.stable_version() == version:
            if superseded is not None:
                self.repo.publish({ROLLOUT: None})  # its devices go back to stable
            session.commit()
            last = session.scalar(
                select(Rollout)
                .where(Rollout.version == version)
                .order_by(Rollout.id.desc())
            )
            return StartOutcome(
                "already_stable",
                f"v{version} is already the fleet's stable version: nothing started",
                last,
                superseded,
            )
        rollout = Rollout(version=version, from_version=self.stable_version())
        rollout.reason = reason
        session.add(rollout)
        session.flush()
        self._publish_stage(rollout, model, 0)
        self._event(rollout, "started", stage=self.plan[0].name, reason=reason)
        session.commit()
        return StartOutcome(
            "started",
            f"rollout {rollout.id} of v{version} started at {self.plan[0].name}"
            + (
                f"; rollout {superseded.id} of v{superseded.version} superseded"
                if superseded is not None
                else ""
            ),
            rollout,
            superseded,
        )

    def retarget(self, session: Session, version: str, reason: str) -> Rollout | None:
        """Make `version` the stable version now (a manual rollback): any active
        rollout is rolled back with the reason as its cause."""
        model = session.get(Model, version)
        if model is None:
            raise FleetConflict(f"model version {version} was not uploaded", 404)
        active = session.scalar(select(Rollout).where(Rollout.state.in_(ACTIVE)))
        if active is not None:
            self._finish(
                active,
                RolloutState.ROLLED_BACK.value,
                {"check": "manual", "detail": reason, "stage": self._stage(active)},
            )
        self.repo.publish(
            {STABLE: (Path(model.blob), assignment(model, self.plan[-1], None))}
            | {ROLLOUT: None}
        )
        session.commit()
        return active

    def set_state(self, session: Session, rollout: Rollout, action: str) -> Rollout:
        if rollout.state not in ACTIVE:
            raise FleetConflict(f"rollout {rollout.id} is {rollout.state}")
        if action == "pause":
            rollout.state = RolloutState.PAUSED.value
            self._event(rollout, RolloutState.PAUSED.value)
        elif action == "resume":
            rollout.state = RolloutState.RUNNING.value
            rollout.stage_started_at = now()  # bake again from here
            self._event(rollout, "resumed")
        else:  # abort | rollback: devices go back to the stable version
            self._finish(
                rollout,
                RolloutState.ABORTED.value
                if action == "abort"
                else RolloutState.ROLLED_BACK.value,
                {"check": "manual", "detail": action, "stage": self._stage(rollout)},
            )
            self.repo.publish({ROLLOUT: None})
        session.commit()
        return rollout

    # -- the loop ----------------------------------------------------------------

    def tick(self, session: Session) -> None:
        self.repo.refresh_timestamp()
        rollout = session.scalar(
            select(Rollout).where(Rollout.state == RolloutState.RUNNING.value)
        )
        if rollout is None:
            return
        model = session.get(Model, rollout.version)
        assert model is not None
        seen_after = now() - timedelta(seconds=self.cfg.offline_after_s)
        fleet = [
            d
            for d in session.scalars(select(Device))
            if d.last_seen is not None and _aware(d.last_seen) >= seen_after
        ]
        eligible = [d for d in fleet if d.profile in model.profiles]
        failed_fleet = [d for d in fleet if d.failed_version == rollout.version]
        failed_percent = 100.0 * len(failed_fleet) / max(len(fleet), 1)
        stage = self.plan[rollout.stage]
        if failed_percent > self.cfg.checks.abort_failed_percent:
            self._roll_back(
                session,
                rollout,
                Cause(
                    "fleet_failed_percent",
                    round(failed_percent, 2),
                    self.cfg.checks.abort_failed_percent,
                    stage.name,
                    f"{len(failed_fleet)} of {len(fleet)} devices failed this version",
                ),
            )
            return
        custom = assignment(model, stage, rollout.id)
        members = [d for d in eligible if in_scope(custom, d.id, d.cohort, d.profile)]
        waited = (now() - _aware(rollout.stage_started_at)).total_seconds()
        if waited < self.cfg.bake_s:
            return
        evidence = self._evidence(session, rollout, members)
        reported = evidence.installed + evidence.failed
        with_telemetry = len({t.device_id for t in evidence.new})
        enough = reported >= self.cfg.min_reported * len(members) and (
            with_telemetry >= self.cfg.min_reported * evidence.installed
        )
        if not enough and waited < self.cfg.stage_timeout_s:
            return
        cause = judge(
            evidence,
            stage.name,
            self.cfg,
            timed_out=not enough and waited >= self.cfg.stage_timeout_s,
        )
        if cause is not None:
            self._roll_back(session, rollout, cause)
            return
        self._event(
            rollout,
            "stage_passed",
            stage=stage.name,
            devices=len(members),
            installed=evidence.installed,
        )
        if rollout.stage + 1 < len(self.plan):
            rollout.stage += 1
            rollout.stage_started_at = now()
            self._publish_stage(rollout, model, rollout.stage)
            self._event(rollout, "stage_started", stage=self.plan[rollout.stage].name)
        else:
            self.repo.publish(
                {
                    STABLE: (Path(model.blob), assignment(model, self.plan[-1], None)),
                    ROLLOUT: None,
                }
            )
            self._finish(rollout, RolloutState.COMPLETED.value, None)
        session.commit()

    def _evidence(
        self, session: Session, rollout: Rollout, members: list[Device]
    ) -> StageEvidence:
        ids = [d.id for d in members]
        installed = sum(d.current_version == rollout.version for d in members)
        failed = sum(
            d.failed_version == rollout.version and d.current_version != rollout.version
            for d in members
        )
        new: list[Telemetry] = []
        previous: list[Telemetry] = []
        if ids:
            new = list(
                session.scalars(
                    select(Telemetry).where(
                        Telemetry.device_id.in_(ids),
                        Telemetry.version == rollout.version,
                        Telemetry.received_at >= rollout.started_at,
                    )
                )
            )
        if ids and rollout.from_version:
            previous = list(
                session.scalars(
                    select(Telemetry)
                    .where(
                        Telemetry.device_id.in_(ids),
                        Telemetry.version == rollout.from_version,
                    )
                    .order_by(Telemetry.id.desc())
                    .limit(20 * len(ids))
                )
            )
        model = session.get(Model, rollout.version)
        return StageEvidence(
            len(members),
            installed,
            failed,
            new,
            previous,
            model.class_prior if model is not None else None,
        )

    def _roll_back(self, session: Session, rollout: Rollout, cause: Cause) -> None:
        self.repo.publish({ROLLOUT: None})  # devices in scope go back to stable
        self._finish(rollout, RolloutState.ROLLED_BACK.value, cause.as_dict())
        session.commit()

    def _publish_stage(self, rollout: Rollout, model: Model, index: int) -> None:
        self.repo.publish(
            {
                ROLLOUT: (
                    Path(model.blob),
                    assignment(model, self.plan[index], rollout.id),
                )
            }
        )

    def _finish(self, rollout: Rollout, state: str, cause: dict | None) -> None:
        rollout.state, rollout.cause, rollout.finished_at = state, cause, now()
        self._event(rollout, state, cause=cause)

    def _stage(self, rollout: Rollout) -> str:
        return self.plan[min(rollout.stage, len(self.plan) - 1)].name

    @staticmethod
    def _event(rollout: Rollout, what: str, **details: object) -> None:
        rollout.events = [
            *rollout.events,
            {"at": now().isoformat(), "event": what, **details},
        ]


def _aware(when: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored in UTC."""
    from datetime import UTC

    return when if when.tzinfo else when.replace(tzinfo=UTC)
