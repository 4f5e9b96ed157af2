"""The fleet server's request bodies (extra fields refused: a typo is an error, not
ignored) and response models (read from the database rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from edge_fleet.controller import Controller
from edge_fleet.db import Rollout

MAX_FEATURES = 4096
MAX_CLASSES = 1000


# -- request bodies --------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # ids, profiles, cohorts: safe in a path
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NAME)]
LabelValue = Annotated[str, StringConstraints(max_length=256)]


class Enrollment(Strict):
    device_id: str = Field(min_length=1, max_length=128, pattern=NAME)
    profile: str = Field(min_length=1, max_length=64, pattern=NAME)
    cohort: str = Field(min_length=1, max_length=64, pattern=NAME)
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        # Pydantic writes the key pattern as patternProperties, which lets a key
        # outside it through in the schema (not here): say every key matches it.
        json_schema_extra={
            "additionalProperties": False,
            "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": NAME},
        },
    )


class Finite(Strict):
    """Numbers from a device: NaN and infinities are refused (JSON's `Infinity`
    parses to a float; one such value would poison every mean it enters)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Count = Annotated[int, Field(ge=0, le=1_000_000)]
Share = Annotated[float, Field(ge=0, le=1)]
ClassLabel = Annotated[str, StringConstraints(min_length=1, max_length=64)]


Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NAME)]
WEEK_S = 7 * 86400


class EnrollmentCodeRequest(Strict):
    """One device (`device_id`), or a batch of up to `devices` whose ids they
    choose; either way only of these profiles and cohorts."""

    device_id: str | None = Field(None, min_length=1, max_length=128, pattern=NAME)
    profiles: list[Name] = Field(min_length=1, max_length=32)
    cohorts: list[Name] = Field(min_length=1, max_length=256)
    devices: int = Field(1, ge=1, le=1_000_000)
    expires_in_s: int = Field(WEEK_S, ge=60, le=365 * 86400)

    @model_validator(mode="after")
    def _one_device_for_an_id(self) -> EnrollmentCodeRequest:
        if self.device_id is not None and self.devices != 1:
            raise ValueError(
                f"devices {self.devices}: a code bound to device_id enrolls 1"
            )
        return self


class FeatureStats(Finite):
    mean: list[float] = Field(max_length=MAX_FEATURES)
    std: list[float] = Field(max_length=MAX_FEATURES)
    min: list[float] = Field(max_length=MAX_FEATURES)
    max: list[float] = Field(max_length=MAX_FEATURES)
    # A table model's (edge_fleet/device/inference.py): each column's share of
    # gaps, and each categorical column's (by position) share of each category.
    missing: list[Share] | None = Field(None, max_length=MAX_FEATURES)
    shares: dict[str, list[Share]] | None = Field(None, max_length=MAX_FEATURES)
    # "mfcc": a keyword spotter's rows, each summarised (edge_fleet/device/audio.py
    # SUMMARY_NAMES), not its 490 inputs.
    summary: Literal["mfcc"] | None = None

    @property
    def features(self) -> int:
        return len(self.mean)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureStats:
        lengths = {len(self.mean), len(self.std), len(self.min), len(self.max)}
        if len(lengths) != 1:
            raise ValueError(
                f"mean, std, min and max have {sorted(lengths)} entries: expected "
                "one per feature, the same in each"
            )
        if any(s < 0 for s in self.std):
            raise ValueError("std: expected values >= 0")
        if any(
            not lo - TOLERANCE <= m <= hi + TOLERANCE
            for lo, m, hi in zip(self.min, self.mean, self.max, strict=True)
        ):
            raise ValueError("expected min <= mean <= max for every feature")
        if self.missing is not None and len(self.missing) != len(self.mean):
            raise ValueError(
                f"missing has {len(self.missing)} entries: expected one per feature "
                f"({len(self.mean)})"
            )
        for column, shares in (self.shares or {}).items():
            if not column.isdigit() or int(column) >= len(self.mean):
                raise ValueError(
                    f"shares[{column!r}]: expected a column position below "
                    f"{len(self.mean)}"
                )
            if len(shares) > MAX_CLASSES or sum(shares) > 1 + TOLERANCE:
                raise ValueError(
                    f"shares[{column!r}]: expected at most {MAX_CLASSES} shares "
                    "adding up to at most 1"
                )
        return self


# The agent rounds its statistics to 4 decimals (edge_fleet.device.inference).
TOLERANCE = 1e-3


class Benchmark(Finite):
    """The smoke test's on-device benchmark (edge_fleet/device/benchmark.py): the
    version's median single-row ms and, timed together with it, the one the device
    ran before (None: it ran none)."""

    version: str = Field(min_length=1, max_length=32)
    ms: float = Field(ge=0, le=3_600_000)
    previous_version: str | None = Field(None, min_length=1, max_length=32)
    previous_ms: float | None = Field(None, ge=0, le=3_600_000)


class TelemetryBatch(Finite):
    """One report of a batch of inferences; the route checks it against the model
    version it names (feature count, batch size) before anything is stored."""

    version: str = Field(min_length=1, max_length=32)
    inferences: int = Field(ge=1, le=1_000_000)
    errors: Count
    latency_ms_median: float = Field(ge=0)
    latency_ms_p95: float = Field(ge=0)
    confidence_mean: float = Field(ge=0, le=1)
    class_counts: dict[ClassLabel, Count] = Field(max_length=MAX_CLASSES)
    feature_stats: FeatureStats
    samples: list[list[float]] | None = Field(None, max_length=64)
    benchmark: Benchmark | None = None

    @model_validator(mode="after")
    def _counts_add_up(self) -> TelemetryBatch:
        if self.errors > self.inferences:
            raise ValueError(
                f"errors {self.errors} > inferences {self.inferences}: expected at "
                "most one error per inference"
            )
        answered = sum(self.class_counts.values())
        if answered != self.inferences - self.errors:
            raise ValueError(
                f"class_counts add up to {answered}: expected inferences - errors "
                f"= {self.inferences - self.errors}"
            )
        width = self.feature_stats.features
        if self.samples and any(len(row) != width for row in self.samples):
            raise ValueError(f"samples: expected rows of {width} features")
        if self.benchmark and self.benchmark.version != self.version:
            raise ValueError(
                f"benchmark.version {self.benchmark.version!r}: expected the "
                f"report's version {self.version!r}"
            )
        return self


class CheckIn(Strict):
    current_version: str | None = Field(None, max_length=32)
    slot: Literal["a", "b"] | None = None
    # stale_metadata: the device could not verify TUF metadata for longer than
    # fleet.max_metadata_age_s (a held or broken link; see `error`).
    health: Literal["ok", "no_model", "failed", "stale_metadata"]
    failed_version: str | None = Field(None, max_length=32)
    error: str | None = Field(None, max_length=500)
    telemetry: TelemetryBatch | None = None


class RolloutRequest(Strict):
    version: str = Field(min_length=1, max_length=32)
    reason: str = Field("", max_length=500)


class StartRollout(RolloutRequest):
    # Abort another version's active rollout and start this one in one step (a new
    # champion replacing an older one's rollout: no interleaving can leave neither).
    supersede: bool = False


# -- responses ---------------------------------------------------------------------


class FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class EnrollmentCodeIssued(BaseModel):
    """The code itself is shown here once; the server keeps its hash."""

    id: int
    code: str
    device_id: str | None
    profiles: list[str]
    cohorts: list[str]
    devices: int
    expires_at: datetime


class NewToken(BaseModel):
    device_id: str
    token: str


class Enrolled(BaseModel):
    device_id: str
    token: str
    poll_s: float


class CheckedIn(BaseModel):
    poll_s: float
    timestamp_version: int


class DeviceView(FromRow):
    id: str
    profile: str
    cohort: str
    labels: dict[str, str]
    current_version: str | None
    slot: str | None
    health: str
    failed_version: str | None
    last_error: str | None
    last_seen: datetime | None
    revoked_at: datetime | None


class ProfileFileView(BaseModel):
    variant: str
    filename: str
    sha256: str
    size: int


class ModelView(FromRow):
    version: str
    model_name: str | None
    filename: str
    sha256: str
    size: int
    variant: str
    profiles: list[str]
    class_prior: dict[str, float] | None
    # A profile's own file, where its measured best is another variant.
    profile_files: dict[str, ProfileFileView] = Field(default_factory=dict)

    @field_validator("profile_files", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return value or {}


class TelemetryView(FromRow):
    id: int  # rising: the order reports arrived in (the monitor's cursor)
    device_id: str
    cohort: str
    version: str
    received_at: datetime
    inferences: int
    errors: int
    latency_ms_median: float
    confidence_mean: float
    class_counts: dict[str, int]
    # what the report's FeatureStats held (a keyword spotter's: "summary": "mfcc")
    feature_stats: dict[str, list[float] | dict[str, list[float]] | str]
    benchmark: dict | None = None  # the smoke test's, while the version runs


class TelemetryWindowView(FromRow):
    device_id: str
    cohort: str
    version: str
    window_start: datetime
    reports: int
    inferences: int
    errors: int
    latency_ms_median: float
    latency_ms_p95: float
    confidence_mean: float
    class_counts: dict[str, int]
    feature_stats: dict[str, list[float] | dict[str, list[float]] | str]


class RolloutRow(FromRow):
    id: int
    version: str
    from_version: str | None
    state: str
    stage: int
    started_at: datetime
    finished_at: datetime | None
    reason: str
    cause: dict | None
    events: list[dict]


class RolloutView(RolloutRow):
    """The row, with the names of its plan's stages and of the current one."""

    stage_name: str
    stages: list[str]

    @classmethod
    def of(cls, rollout: Rollout, controller: Controller) -> RolloutView:
        plan = controller.plan
        return cls(
            **RolloutRow.model_validate(rollout).model_dump(),
            stage_name=plan[min(rollout.stage, len(plan) - 1)].name,
            stages=[stage.name for stage in plan],
        )


class VersionCount(BaseModel):
    version: str | None
    health: str
    devices: int


class FleetSummary(BaseModel):
    devices: int
    by_version: list[VersionCount]
    channels: dict[str, dict]
    active_rollout: RolloutView | None
    last_rollout: RolloutView | None
    # Devices over their check-in budget since the server started: 429s answered.
    throttled: dict[str, int] = {}


class RolloutStarted(BaseModel):
    outcome: str
    detail: str
    rollout: RolloutView | None
    superseded: RolloutView | None


class Retargeted(BaseModel):
    stable: str
    rolled_back: RolloutView | None


class CohortCheckReport(Finite):
    """One monitor pass's drift check of a cohort (stack.contracts.DriftOutcome's
    fields the console shows, and the snapshot's address in the Evidently UI)."""

    drifted: bool
    judged: bool = True
    flagged: bool = False
    trigger: bool = False
    drift_share: Share
    rows: int = Field(0, ge=0, le=10**9)
    devices: int | None = Field(None, ge=0, le=10**9)
    devices_drifted: int | None = Field(None, ge=0, le=10**9)
    evidence: float | None = Field(None, ge=0)
    evidence_needed: float | None = Field(None, ge=0)
    decision: str = Field("", max_length=500)
    snapshot_id: str | None = Field(None, max_length=64)
    snapshot_url: str | None = Field(None, max_length=500, pattern=r"^https?://")
    event_id: str | None = Field(None, max_length=64)


class CohortCheckView(CohortCheckReport):
    id: int
    cohort: str
    checked_at: datetime
