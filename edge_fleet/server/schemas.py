"""The fleet server's request bodies (extra fields refused: a typo is an error, not
ignored) and response models (read from the database rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)


class FeatureStats(Strict):
    mean: list[float] = Field(max_length=MAX_FEATURES)
    std: list[float] = Field(max_length=MAX_FEATURES)
    min: list[float] = Field(max_length=MAX_FEATURES)
    max: list[float] = Field(max_length=MAX_FEATURES)


class TelemetryBatch(Strict):
    version: str = Field(min_length=1, max_length=32)
    inferences: int = Field(ge=1, le=1_000_000)
    errors: int = Field(ge=0, le=1_000_000)
    latency_ms_median: float = Field(ge=0)
    latency_ms_p95: float = Field(ge=0)
    confidence_mean: float = Field(ge=0, le=1)
    class_counts: dict[str, int] = Field(max_length=MAX_CLASSES)
    feature_stats: FeatureStats
    samples: list[list[float]] | None = Field(None, max_length=64)


class CheckIn(Strict):
    current_version: str | None = Field(None, max_length=32)
    slot: Literal["a", "b"] | None = None
    health: Literal["ok", "no_model", "failed"]
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


class ModelView(FromRow):
    version: str
    model_name: str | None
    filename: str
    sha256: str
    size: int
    variant: str
    profiles: list[str]
    class_prior: dict[str, float] | None


class TelemetryView(FromRow):
    device_id: str
    cohort: str
    version: str
    received_at: datetime
    inferences: int
    errors: int
    latency_ms_median: float
    confidence_mean: float
    class_counts: dict[str, int]
    feature_stats: dict[str, list[float]]


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


class RolloutStarted(BaseModel):
    outcome: str
    detail: str
    rollout: RolloutView | None
    superseded: RolloutView | None


class Retargeted(BaseModel):
    stable: str
    rolled_back: RolloutView | None
