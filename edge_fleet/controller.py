"""The rollout controller: canary -> waves -> full, each stage judged on the model as
devices run it, against the previous version on the same devices.

All state is in the database and the TUF repository, so a restarted server (or
another replica, when the leader dies: edge_fleet/coordination.py) goes on from the
recorded stage. The database is the record: a stage's outcome is committed before
it is published, and `reconcile` publishes what a leader that died in between did
not. `tick()` is called every half second by the leading replica.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from components.config import FleetConfig
from edge_fleet.checks import (
    Cause,
    StageEvidence,
    class_rows_needed,
    failed,
    judged,
    measure,
)
from edge_fleet.db import Device, Model, Rollout, Telemetry, aware, now
from edge_fleet.device.scope import ROLLOUT, STABLE, in_scope, profile_target
from edge_fleet.errors import FleetConflict
from edge_fleet.retention import roll_up
from edge_fleet.tuf_repo import FleetRepository
from stack.contracts import ACTIVE_ROLLOUT_STATES, RolloutState

log = logging.getLogger("edgeloop.fleet")

ACTIVE = ACTIVE_ROLLOUT_STATES
ROLL_UP_EVERY_S = 30.0  # telemetry past retention is summarised this often


@dataclass(frozen=True)
class Stage:
    name: str  # canary | wave-1 ... | full
    percent: float
    cohorts: tuple[str, ...] = ()


# The silent devices a rollout's events name (the rest are counted).
SILENT_LISTED = 50


def silent_devices(members: list[Device], version: str) -> list[str]:
    """The stage's devices that neither run `version` nor reported it failed."""
    return sorted(
        d.id for d in members if version not in (d.current_version, d.failed_version)
    )


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


def channel_targets(
    channel: str, model: Model, stage: Stage, rollout_id: int | None, files: Path
) -> dict[str, tuple[Path, dict]]:
    """What publishing `model` in `channel` sets: the channel's target (the
    version's file) and each profile's own, where its measured best is another
    variant (the same assignment, for that profile, with its file). A stored
    file's path is relative to `files` (the state folder; an absolute one, as
    stored before, stays as it is)."""
    custom = assignment(model, stage, rollout_id)
    targets = {channel: (files / model.blob, custom)}
    for profile, own in (model.profile_files or {}).items():
        targets[profile_target(channel, profile)] = (
            files / own["blob"],
            custom
            | {
                "variant": own["variant"],
                "filename": own["filename"],
                "profiles": [profile],
            },
        )
    return targets


@dataclass(frozen=True)
class StartOutcome:
    """What a start request did: `started`, or a no-op (`already_rolling_out`,
    `already_stable`); `superseded` is the other version's rollout it aborted."""

    outcome: str
    detail: str
    rollout: Rollout | None
    superseded: Rollout | None = None


class Controller:
    def __init__(self, repo: FleetRepository, cfg: FleetConfig, files: Path) -> None:
        """`files`: the folder the models' stored paths are relative to."""
        self.repo, self.cfg, self.files = repo, cfg, files
        self.plan = stages(cfg)
        self._rolled_up_at = 0.0  # monotonic: the first tick rolls up

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
        superseded = self._supersede(active, version, reason) if active else None
        if self.stable_version() == version:
            return self._already_stable(session, version, superseded)
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

    def _supersede(self, active: Rollout, version: str, reason: str) -> Rollout:
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
        return active

    def _already_stable(
        self, session: Session, version: str, superseded: Rollout | None
    ) -> StartOutcome:
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
            channel_targets(STABLE, model, self.plan[-1], None, self.files)
            | {ROLLOUT: None}
        )
        session.commit()
        return active

    def set_state(self, session: Session, rollout: Rollout, action: str) -> Rollout:
        """Pause, resume, abort or roll back; the caller is the repository's writer
        (`Coordinator.publishing`).
        The rollout is read again here, under the lock (and a row lock where the
        database has them): the controller may have finished it since the caller
        read it, and a finished rollout is not changed (409 with its state)."""
        session.refresh(rollout, with_for_update=True)
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
        """One look at the running rollout: roll it back when too much of the fleet
        failed it; once the stage baked and enough of its devices reported (or it
        timed out), judge it, then roll back or move to the next stage."""
        self.repo.maintain()
        fixed = self.reconcile(session)
        if fixed is not None:
            log.warning("the repository did not show the database's state: %s", fixed)
        if time.monotonic() - self._rolled_up_at >= ROLL_UP_EVERY_S:
            roll_up(session, self.cfg)
            self._rolled_up_at = time.monotonic()
        rollout = session.scalar(
            select(Rollout).where(Rollout.state == RolloutState.RUNNING.value)
        )
        if rollout is None:
            return
        model = session.get(Model, rollout.version)
        assert model is not None
        online = self._online(session)
        stage = self.plan[rollout.stage]
        failing = self._fleet_failing(online, rollout, stage)
        if failing is not None:
            self._roll_back(session, rollout, failing)
            return
        # Its devices: of every profile it goes to (with the version's file or
        # their profile's own), in the stage's scope.
        scope = assignment(model, stage, rollout.id) | {
            "profiles": model.all_profiles()
        }
        members = [d for d in online if in_scope(scope, d.id, d.cohort, d.profile)]
        waited = (now() - aware(rollout.stage_started_at)).total_seconds()
        if waited < self.cfg.bake_s:
            return
        evidence = self._evidence(session, rollout, members)
        reported = evidence.installed + evidence.failed
        with_telemetry = len({t.device_id for t in evidence.new})
        enough = (
            reported >= self.cfg.min_reported * len(members)
            and with_telemetry >= self.cfg.min_reported * evidence.installed
            and not class_rows_needed(evidence, self.cfg.checks)
        )
        timed_out = waited >= self.cfg.stage_timeout_s
        if not enough and not timed_out:
            return
        silent = silent_devices(members, rollout.version)
        if not enough and reported < self.cfg.quorum * len(members):
            self._pause_short_of_quorum(session, rollout, stage, members, silent)
            return
        measured = measure(evidence, stage.name, self.cfg, timed_out=not enough)
        cause = next((c for c in measured if failed(c)), None)
        if cause is not None:
            self._roll_back(session, rollout, cause, measured)
            return
        self._event(
            rollout,
            "stage_passed",
            stage=stage.name,
            devices=len(members),
            installed=evidence.installed,
            checks=judged(measured),
            **({"silent": silent[:SILENT_LISTED]} if silent else {}),
        )
        # Committed, then published: a leader that dies in between leaves the
        # database ahead, and the next leader's `reconcile` publishes it (the
        # other way round, it would judge the stage again).
        publish = self._advance(rollout, model)
        session.commit()
        self.repo.publish(publish)

    def reconcile(self, session: Session) -> str | None:
        """Make what the repository publishes follow the database, where a leader
        died between committing a rollout's change and publishing it (or an
        admin route between publishing and committing). Returns what it
        published, None when the two agree."""
        published = self.repo.channels().get(ROLLOUT)
        active = session.scalar(select(Rollout).where(Rollout.state.in_(ACTIVE)))
        if active is not None:
            stage = self.plan[min(active.stage, len(self.plan) - 1)]
            if published is not None and (
                published.get("rollout"),
                published.get("stage"),
            ) == (active.id, stage.name):
                return None
            model = session.get(Model, active.version)
            assert model is not None
            self._publish_stage(active, model, active.stage)
            return f"rollout {active.id} at {stage.name}"
        if published is None:
            return None
        last = session.scalar(select(Rollout).order_by(Rollout.id.desc()))
        if (
            last is not None
            and last.state == RolloutState.COMPLETED.value
            and last.id == published.get("rollout")
        ):
            model = session.get(Model, last.version)
            assert model is not None
            self.repo.publish(
                channel_targets(STABLE, model, self.plan[-1], None, self.files)
                | {ROLLOUT: None}
            )
            return f"v{last.version} stable (rollout {last.id} completed)"
        self.repo.publish({ROLLOUT: None})
        return "no active rollout"

    def _pause_short_of_quorum(
        self,
        session: Session,
        rollout: Rollout,
        stage: Stage,
        members: list[Device],
        silent: list[str],
    ) -> None:
        """At the deadline too few devices reported to judge the stage: paused, not
        rolled back (no device said the version is bad), for a person to resume
        (a longer wait), abort or roll back."""
        rollout.state = RolloutState.PAUSED.value
        self._event(
            rollout,
            "paused_short_of_quorum",
            stage=stage.name,
            devices=len(members),
            reported=len(members) - len(silent),
            quorum=self.cfg.quorum,
            silent=silent[:SILENT_LISTED],
        )
        session.commit()

    def _online(self, session: Session) -> list[Device]:
        """The devices seen within `fleet.offline_after_s`."""
        seen_after = now() - timedelta(seconds=self.cfg.offline_after_s)
        return [
            d
            for d in session.scalars(select(Device))
            if d.last_seen is not None and aware(d.last_seen) >= seen_after
        ]

    def _fleet_failing(
        self, online: list[Device], rollout: Rollout, stage: Stage
    ) -> Cause | None:
        failed = [d for d in online if d.failed_version == rollout.version]
        percent = 100.0 * len(failed) / max(len(online), 1)
        limit = self.cfg.checks.abort_failed_percent
        if not percent > limit:
            return None
        return Cause(
            "fleet_failed_percent",
            round(percent, 2),
            limit,
            stage.name,
            f"{len(failed)} of {len(online)} devices failed this version",
        )

    def _advance(self, rollout: Rollout, model: Model) -> dict:
        """The next stage, or, after the last, the version made stable; returns
        what to publish once it is committed."""
        if rollout.stage + 1 < len(self.plan):
            rollout.stage += 1
            rollout.stage_started_at = now()
            self._event(rollout, "stage_started", stage=self.plan[rollout.stage].name)
            return channel_targets(
                ROLLOUT, model, self.plan[rollout.stage], rollout.id, self.files
            )
        self._finish(rollout, RolloutState.COMPLETED.value, None)
        return channel_targets(STABLE, model, self.plan[-1], None, self.files) | {
            ROLLOUT: None
        }

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

    def _roll_back(
        self,
        session: Session,
        rollout: Rollout,
        cause: Cause,
        measured: list[Cause] | None = None,
    ) -> None:
        """`measured`: every check's verdict on the stage, recorded with the event."""
        self._finish(rollout, RolloutState.ROLLED_BACK.value, cause.as_dict())
        if measured:
            *before, last = rollout.events
            rollout.events = [*before, last | {"checks": judged(measured)}]
        session.commit()
        self.repo.publish({ROLLOUT: None})  # devices in scope go back to stable

    def _publish_stage(self, rollout: Rollout, model: Model, index: int) -> None:
        self.repo.publish(
            channel_targets(ROLLOUT, model, self.plan[index], rollout.id, self.files)
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
