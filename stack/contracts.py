"""Every name that crosses a package boundary, defined once: the MLflow tags and
aliases the registry carries between the flows, serving and the scenarios; the
Prefect event the drift monitor emits and the work pool the stack's deployments run
on; the fleet's TUF channels and rollout states; the monitor's outcome per target."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Every tag the stack sets on an MLflow run or model version starts with this
# (lineage, data card, optimization and trigger tags are written by prefix).
TAG_PREFIX = "edgeloop."
ALIAS_HISTORY_PREFIX = f"{TAG_PREFIX}alias_history."  # one tag per alias change
TRIGGER_PREFIX = f"{TAG_PREFIX}trigger."  # what started a training run


# A request carrying this header (any value) is answered as any other, and kept out
# of serving's prediction log (and so out of drift checks): load tests, benchmarks
# and smoke tests of a live stack send it, so measuring the stack cannot make it
# retrain.
SYNTHETIC_HEADER = "X-Edgeloop-Synthetic"


class Tag(StrEnum):
    """The MLflow tags one package writes and another reads."""

    SHIP_FILE = f"{TAG_PREFIX}ship_file"  # the run artifact a device gets
    SHIP_VARIANT = f"{TAG_PREFIX}ship_variant"
    SHIP_ACCEPTED = f"{TAG_PREFIX}ship_accepted"
    DEPLOYABLE_PROFILES = f"{TAG_PREFIX}deployable_profiles"  # comma list or none
    # Each device profile's measured best: `cloud=fp32,mcu=-` (- where none fits),
    # and its file in the run: `cloud=variants/fp32.onnx`.
    SHIP_PER_PROFILE = f"{TAG_PREFIX}ship_per_profile"
    SHIP_FILES_PER_PROFILE = f"{TAG_PREFIX}ship_files_per_profile"
    GATE = f"{TAG_PREFIX}gate"  # passed | failed
    GATE_FAILURES = f"{TAG_PREFIX}gate_failures"
    # What the decision was made on: the gate settings and the candidate's
    # measurements (a digest); other settings or measurements are judged again.
    GATE_INPUTS = f"{TAG_PREFIX}gate_inputs"
    # The candidate and the champion on the same test rows (the drop gate's
    # paired evidence).
    VS_CHAMPION = f"{TAG_PREFIX}vs_champion"
    # Why a version that passed the gates became champion, or did not.
    PROMOTION = f"{TAG_PREFIX}promotion"
    GATE_SEAL = f"{TAG_PREFIX}gate_seal"  # the decision, signed (stack/gate_seal.py)
    # An explicit rollback to this version, signed (stack/rollback_order.py).
    ROLLBACK_ORDER = f"{TAG_PREFIX}rollback_order"
    TRIGGER = f"{TAG_PREFIX}trigger"  # drift | schedule | manual
    PREPARED_DATA_MD5 = f"{TAG_PREFIX}prepared_data_md5"
    MODEL_MD5 = f"{TAG_PREFIX}model_md5"


# The MLflow experiment the training runs are logged to.
EXPERIMENT = "edgeloop-training"


class Alias(StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"


# The Prefect event the monitor flow emits when a target's drift persists; its
# resource id is DRIFT_RESOURCE_PREFIX + the target, which the retraining
# deployment's trigger matches.
DRIFT_EVENT = "edgeloop.drift.detected"
DRIFT_RESOURCE_PREFIX = "edgeloop.drift."
# The process work pool the stack's deployments run on, polled by its worker.
WORK_POOL = "edgeloop"


class Channel(StrEnum):
    """The fleet's TUF targets: what every eligible device runs, and what a rollout
    is moving to (with the scope of devices it has reached)."""

    STABLE = "channel/stable"
    ROLLOUT = "channel/rollout"


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


# As stored (plain strings: what a database driver binds).
ACTIVE_ROLLOUT_STATES = (RolloutState.RUNNING.value, RolloutState.PAUSED.value)


@dataclass(frozen=True)
class DriftOutcome:
    """One target's drift check in one monitor run: the window's drift, the
    trigger's decision, and (where delayed labels exist) the champion's accuracy."""

    target: str
    rows: int
    drift_share: float
    drifted: bool
    drifted_columns: list[str]
    judged: bool  # False: the window was too small for a verdict
    reference: str  # what the window was compared with
    trigger: bool  # the drift persisted: retraining is started
    decision: str  # the trigger's reason, in words
    snapshot_id: str | None = None
    event_id: str | None = None  # the emitted DRIFT_EVENT, when triggered
    delayed_label_rows: int | None = None
    accuracy_delayed: float | None = None
    accuracy_reference: float | None = None
    performance_degraded: bool | None = None
    performance_snapshot_id: str | None = None
    # A cohort's window: the devices in it, and those whose own reports drift
    # (the window drifts only with monitoring.min_devices of them).
    devices: int | None = None
    devices_drifted: int | None = None
    # The sequential test (monitoring/sequential.py): flagged at this pass, the
    # e-detector against its alarm level, the observations it took this pass.
    flagged: bool = False
    evidence: float | None = None
    evidence_needed: float | None = None
    new_observations: int = 0
    check_s: float | None = None  # the target's check (verdicts and test), seconds
