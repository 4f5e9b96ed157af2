"""The ledger: which version a device ran at a time T, and why. It reads only what
the stack already records: the device's check-ins (its telemetry reports, and the
windows they are rolled up into past retention), the rollouts' recorded events,
and the lineage each version was uploaded with (the registry's tags as the release
read them: the MLflow run, the gate decision and its seal, the drift event that
started the training run, the DVC hashes of its data). The fleet keeps its own
copy of that lineage, so a version deleted in the registry, or a rollback, leaves
the history as it was."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge_fleet.controller import Stage, assignment
from edge_fleet.db import Device, Model, Rollout, Telemetry, TelemetryWindow, aware, now
from edge_fleet.device.scope import in_scope
from stack.contracts import RolloutState

# A rollout stopped before it finished: its devices went back to the stable version.
STOPPED = (RolloutState.ROLLED_BACK.value, RolloutState.ABORTED.value)

# What the release copies from the registry at upload (flows/edge_release.py
# `registry_lineage`); a key it could not read is left out.
LINEAGE_KEYS = (
    "model",  # the registered model
    "version",
    "run_id",  # the MLflow training run
    "experiment_id",
    "registered_at",
    "gate",  # passed | failed
    "seal_sha256",  # of the gate's signed decision, verified at upload
    "promoted",  # the alias change that made it champion: {who, at, why}
    "trigger",  # drift | schedule | manual
    "drift_target",  # the cohort or serving target whose drift started it
    "drift_share",
    "drift_event_id",  # the Prefect event
    "drift_snapshot_id",  # the Evidently snapshot
    "prefect_flow_run_id",  # the training pipeline's run
    "raw_data_md5",  # DVC's hashes of the data version
    "prepared_data_md5",
    "git_commit",
    "params_hash",
    "mlflow_url",  # where the registry was (the console links there)
    "prefect_url",
)


def in_utc(at: datetime) -> datetime:
    """A time asked about, in UTC (a time without an offset is UTC): stored times
    are UTC, and SQLite compares them as text. ValueError past the calendar's
    range (year 1 to 9999 in UTC)."""
    try:
        return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError(f"{at.isoformat()}: out of range in UTC") from None


@dataclass(frozen=True)
class Ran:
    """A version a device reported running, and from which record."""

    version: str
    since: datetime | None  # its first report of it in this run of reports
    last_report: datetime | None  # its last report at or before T
    source: str  # check-in | rolled-up check-ins | device record


def version_at(session: Session, device: Device, at: datetime | None) -> Ran | None:
    """The version `device` ran at `at` (None: now), from its reports."""
    if at is None and device.current_version:
        return Ran(
            device.current_version,
            _since(session, device.id, device.current_version, now()),
            aware(device.last_seen) if device.last_seen else None,
            "device record",
        )
    when = at or now()
    row = session.execute(
        select(Telemetry.version, Telemetry.received_at)
        .where(Telemetry.device_id == device.id, Telemetry.received_at <= when)
        .order_by(Telemetry.received_at.desc())
        .limit(1)
    ).first()
    if row is not None:
        version, last = row
        return Ran(
            version, _since(session, device.id, version, when), aware(last), "check-in"
        )
    window = session.execute(
        select(TelemetryWindow.version, TelemetryWindow.window_start)
        .where(
            TelemetryWindow.device_id == device.id,
            TelemetryWindow.window_start <= when,
        )
        .order_by(TelemetryWindow.window_start.desc())
        .limit(1)
    ).first()
    if window is not None:
        return Ran(window[0], None, aware(window[1]), "rolled-up check-ins")
    return None


def _since(
    session: Session, device_id: str, version: str, when: datetime
) -> datetime | None:
    """The first report of `version` after the device last reported another one
    (at or before `when`)."""
    other = session.scalar(
        select(func.max(Telemetry.received_at)).where(
            Telemetry.device_id == device_id,
            Telemetry.version != version,
            Telemetry.received_at <= when,
        )
    )
    query = select(func.min(Telemetry.received_at)).where(
        Telemetry.device_id == device_id,
        Telemetry.version == version,
        Telemetry.received_at <= when,
    )
    if other is not None:
        query = query.where(Telemetry.received_at > other)
    first = session.scalar(query)
    return aware(first) if first is not None else None


def stage_joined(
    plan: list[Stage], model: Model, rollout: Rollout, device: Device
) -> Stage | None:
    """The first stage of `rollout` whose scope took `device` in (None: the
    rollout stopped before it reached the device)."""
    profiles = {"profiles": model.all_profiles()}
    for index, stage in enumerate(plan):
        if index > rollout.stage:
            return None
        scope = assignment(model, stage, rollout.id) | profiles
        if in_scope(scope, device.id, device.cohort, device.profile):
            return stage
    return None


def stage_events(rollout: Rollout, stage: str) -> list[dict]:
    """The rollout's events about `stage` (its start, its verdict, a pause)."""
    first = stage == "canary"
    return [
        e
        for e in rollout.events
        if e.get("stage") == stage
        or (first and e.get("event") == "started")
        or (e.get("cause") or {}).get("stage") == stage
    ]


def how(
    session: Session, plan: list[Stage], device: Device, ran: Ran, at: datetime
) -> dict:
    """How `ran.version` reached the device, by the last recorded change before it
    did: a rollout of it (and the stage that took the device in), a rollout of
    another version stopped and its devices sent back to it, or another version's
    completed rollout after which it was made stable again (a retarget)."""
    when = ran.since or at
    version = ran.version
    rollout = session.scalar(
        select(Rollout)
        .where(Rollout.version == version, Rollout.started_at <= when)
        .order_by(Rollout.started_at.desc())
        .limit(1)
    )
    back = session.scalar(
        select(Rollout)
        .where(
            Rollout.from_version == version,
            Rollout.state.in_(STOPPED),
            Rollout.finished_at <= when,
        )
        .order_by(Rollout.finished_at.desc())
        .limit(1)
    )
    replaced = session.scalar(
        select(Rollout)
        .where(
            Rollout.version != version,
            Rollout.state == RolloutState.COMPLETED.value,
            Rollout.finished_at <= when,
        )
        .order_by(Rollout.finished_at.desc())
        .limit(1)
    )
    moments = [
        (aware(rollout.started_at), "rollout") if rollout else None,
        (aware(back.finished_at), "back") if back and back.finished_at else None,
        (aware(replaced.finished_at), "retarget")
        if replaced and replaced.finished_at
        else None,
    ]
    latest = max((m for m in moments if m is not None), default=None)
    if latest is None:
        return {"kind": "unrecorded"}
    if latest[1] == "rollout":
        assert rollout is not None
        return _rollout_how(session, plan, device, rollout)
    stopped = back if latest[1] == "back" else replaced
    assert stopped is not None and stopped.finished_at is not None
    return {
        "kind": latest[1],
        "rollout": stopped.id,
        "version": stopped.version,
        "state": stopped.state,
        "cause": stopped.cause,
        "finished_at": aware(stopped.finished_at).isoformat(),
    }


def _rollout_how(
    session: Session, plan: list[Stage], device: Device, rollout: Rollout
) -> dict:
    model = session.get(Model, rollout.version)
    stage = stage_joined(plan, model, rollout, device) if model else None
    return {
        "kind": "rollout",
        "rollout": rollout.id,
        "from_version": rollout.from_version,
        "state": rollout.state,
        "reason": rollout.reason,
        "stage": stage.name if stage else None,
        "events": stage_events(rollout, stage.name) if stage else [],
        "started_at": aware(rollout.started_at).isoformat(),
        "finished_at": aware(rollout.finished_at).isoformat()
        if rollout.finished_at
        else None,
    }


def explain(
    session: Session, plan: list[Stage], device: Device, at: datetime | None
) -> dict:
    """Device -> version -> rollout and stage -> gate and seal -> training run ->
    the drift event that started it -> the data version, as of `at` (None: now)."""
    ran = version_at(session, device, at)
    answer: dict = {
        "device": {
            "id": device.id,
            "cohort": device.cohort,
            "profile": device.profile,
            "health": device.health,
        },
        "at": (at or now()).isoformat(),
        "ran": None,
        "how": None,
        "lineage": None,
    }
    if ran is None:
        return answer
    answer["ran"] = {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in asdict(ran).items()
    }
    answer["how"] = how(session, plan, device, ran, at or now())
    model = session.get(Model, ran.version)
    if model is not None:
        answer["lineage"] = dict(model.lineage or {}) | {
            "uploaded_at": aware(model.created_at).isoformat(),
            "sha256": model.sha256,
            "variant": model.variant,
        }
    return answer


def chain(explained: dict) -> list[str]:
    """The answer as lines, newest link first (the CLI's and the console's)."""
    device = explained["device"]
    lines = [
        f"device {device['id']} (cohort {device['cohort']}, profile "
        f"{device['profile']}) at {explained['at']}"
    ]
    ran = explained["ran"]
    if ran is None:
        return [
            *lines,
            "  ran no version then: no report of one at or before that time",
        ]
    seen = f"first reported {ran['since']}" if ran["since"] else "first report not kept"
    lines.append(
        f"  ran v{ran['version']} ({seen}; last {ran['last_report']}; "
        f"from its {ran['source']})"
    )
    lines.extend(_how_lines(explained["how"]))
    lineage = explained["lineage"] or {}
    lines.extend(_lineage_lines(ran["version"], lineage))
    return lines


def _how_lines(how_: dict) -> list[str]:
    if how_["kind"] == "rollout":
        line = (
            f"  <- rollout {how_['rollout']} (v{how_['from_version'] or '-'} -> this; "
            f"{how_['reason'] or 'no reason given'}), now {how_['state']}"
        )
        if how_["stage"] is None:
            return [
                line,
                "     stopped before the stage that would have taken this device in",
            ]
        said = "; ".join(_event_text(e) for e in how_["events"]) or "no events recorded"
        return [line, f"     took this device in at {how_['stage']}: {said}"]
    if how_["kind"] == "retarget":
        return [
            f"  <- made stable again (a retarget) after rollout {how_['rollout']} of "
            f"v{how_['version']} completed at {how_['finished_at']}"
        ]
    if how_["kind"] == "back":
        cause = how_["cause"] or {}
        return [
            f"  <- back on it when rollout {how_['rollout']} of v{how_['version']} was "
            f"{how_['state']} at {how_['finished_at']}: {cause.get('check', '?')} "
            f"{cause.get('detail', '')}".rstrip()
        ]
    return [
        "  <- no rollout of it recorded (made stable by a retarget, or before this "
        "fleet kept rollouts)"
    ]


def _event_text(event: dict) -> str:
    name = event.get("event", "?")
    details = {
        k: v
        for k, v in event.items()
        if k not in ("at", "event", "stage", "checks", "silent") and v not in (None, "")
    }
    text = f"{name} {event.get('at', '')}".strip()
    if details:
        text += " (" + ", ".join(f"{k} {v}" for k, v in details.items()) + ")"
    for check in event.get("checks", []):
        text += (
            f"; {check['check']} {check['value']} vs {check['threshold']}"
            f" {'FAILED' if check.get('failed') else 'ok'}"
        )
    return text


def _lineage_lines(version: str, lineage: dict) -> list[str]:
    if not lineage.get("run_id"):
        return [
            f"  <- v{version} was uploaded {lineage.get('uploaded_at', '?')} without "
            "its registry lineage (by hand, or before the fleet kept it)"
        ]
    got = {k: lineage.get(k, "?") for k in (*LINEAGE_KEYS, "uploaded_at")}
    lines = [
        f"  <- gate {got['gate']}; seal sha256 {str(got['seal_sha256'])[:16]}, "
        f"verified by the release at upload {got['uploaded_at']}"
    ]
    if promoted := lineage.get("promoted"):
        lines.append(
            f"  <- champion since {promoted.get('at')} ({promoted.get('who')}: "
            f"{promoted.get('why')})"
        )
    lines.append(
        f"  <- MLflow {got['model']} v{got['version']}, training run {got['run_id']}"
    )
    run = f"Prefect flow run {got['prefect_flow_run_id']}"
    if got["trigger"] == "drift":
        lines.append(
            f"  <- started by drift on {got['drift_target']} (share "
            f"{got['drift_share']}; event {got['drift_event_id']}; Evidently "
            f"snapshot {lineage.get('drift_snapshot_id', '-')}); {run}"
        )
    else:
        lines.append(f"  <- started by {got['trigger']}; {run}")
    lines.append(
        f"  <- data version: raw {got['raw_data_md5']}, prepared "
        f"{got['prepared_data_md5']} (DVC); code {got['git_commit']}"
    )
    return lines
