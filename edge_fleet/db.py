"""The fleet server's tables (SQLAlchemy 2): SQLite by default, any SQLAlchemy URL
(PostgreSQL) by setting `EDGELOOP_FLEET_DATABASE_URL`; their schema is made and
upgraded by Alembic's migrations in edge_fleet/migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from edge_fleet.coordination import KEEPALIVE, migrating


def now() -> datetime:
    return datetime.now(UTC)


def aware(when: datetime) -> datetime:
    """A stored time in UTC (SQLite hands back naive datetimes; they were stored
    in UTC)."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    profile: Mapped[str] = mapped_column(String(64), index=True)
    cohort: Mapped[str] = mapped_column(String(64), index=True)
    labels: Mapped[dict] = mapped_column(JSON, default=dict)
    current_version: Mapped[str | None] = mapped_column(
        String(32), nullable=True, index=True
    )
    slot: Mapped[str | None] = mapped_column(String(1), nullable=True)
    # ok | no_model | failed (the last install failed; still on current_version)
    # | stale_metadata (no verified TUF metadata for fleet.max_metadata_age_s)
    health: Mapped[str] = mapped_column(String(16), default="no_model", index=True)
    failed_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    # Revoked by an admin: its token no longer answers (401); delete it to let the
    # id enroll again.
    revoked_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_seen: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )


class EnrollmentCode(Base):
    """A code an admin issued (shown once, stored hashed): it enrolls `device_id`
    only, or up to `max_devices` devices, of the profiles and cohorts it lists."""

    __tablename__ = "enrollment_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    device_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    profiles: Mapped[list] = mapped_column(JSON)
    cohorts: Mapped[list] = mapped_column(JSON)
    max_devices: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Model(Base):
    __tablename__ = "models"

    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The registered model the version belongs to (None: stored before 0003).
    model_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    filename: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str] = mapped_column(String(64))
    profiles: Mapped[list] = mapped_column(JSON)
    blob: Mapped[str] = mapped_column(String(500))
    # Class shares of the version's training data ({label: share}), when given: the
    # rollout's class-distribution check measures against it (controller.judge).
    class_prior: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Input features the version takes: its telemetry's feature_stats have exactly
    # this many entries (None: stored before 0004).
    features: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The file a device profile gets where its measured best is another variant:
    # {profile: {variant, filename, sha256, size, blob}} (None: the version's file
    # for every profile in `profiles`; stored before 0008).
    profile_files: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Where the version came from, as the release read the registry at upload
    # (ledger.LINEAGE_KEYS; None: uploaded before 0009, or without it).
    lineage: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)

    def all_profiles(self) -> list[str]:
        """The profiles this version goes to: its file's, and those with their own."""
        return sorted(set(self.profiles) | set(self.profile_files or {}))


class Rollout(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(ForeignKey("models.version"))
    from_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # running | paused | completed | rolled_back | aborted
    state: Mapped[str] = mapped_column(String(16), default="running", index=True)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    stage_started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=now
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    reason: Mapped[str] = mapped_column(String(500), default="")
    # Why it stopped: {"check", "value", "threshold", "stage", ...}; never opaque.
    cause: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    events: Mapped[list] = mapped_column(JSON, default=list)


class Telemetry(Base):
    __tablename__ = "telemetry"
    # A device's reports in time: the ledger's "which version at T".
    __table_args__ = (
        Index("ix_telemetry_device_received", "device_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    cohort: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32), index=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=now, index=True
    )
    inferences: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    latency_ms_median: Mapped[float] = mapped_column(Float)
    latency_ms_p95: Mapped[float] = mapped_column(Float)
    confidence_mean: Mapped[float] = mapped_column(Float)
    class_counts: Mapped[dict] = mapped_column(JSON)
    # Per-feature summary statistics (mean, std, min, max) of the device's inputs.
    feature_stats: Mapped[dict] = mapped_column(JSON)
    samples: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # The smoke test's on-device benchmark of this version against the previous
    # one (schemas.Benchmark), while the device runs the version it benchmarked.
    benchmark: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class TelemetryWindow(Base):
    """Reports older than fleet.telemetry_retention_s, summarised per device,
    version and window (edge_fleet/retention.py): the same fields, pooled."""

    __tablename__ = "telemetry_windows"
    __table_args__ = (
        UniqueConstraint(
            "device_id", "version", "window_start", name="uq_telemetry_window"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128))
    cohort: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    reports: Mapped[int] = mapped_column(Integer)
    inferences: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    latency_ms_median: Mapped[float] = mapped_column(Float)  # median of reports'
    latency_ms_p95: Mapped[float] = mapped_column(Float)  # highest of reports'
    confidence_mean: Mapped[float] = mapped_column(Float)  # inference-weighted
    class_counts: Mapped[dict] = mapped_column(JSON)  # summed
    # Per feature: pooled mean and std over every inference, lowest min, highest max.
    feature_stats: Mapped[dict] = mapped_column(JSON)


class CohortCheck(Base):
    """One monitor pass's drift check of a device cohort, as the monitor reported
    it (flows/monitor.py): its verdict, the sequential test's evidence, and the
    Evidently snapshot stored for it. The console draws a cohort's trend from
    these; the newest COHORT_CHECKS_KEPT of each cohort are kept."""

    __tablename__ = "cohort_checks"
    __table_args__ = (Index("ix_cohort_checks_cohort_id", "cohort", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cohort: Mapped[str] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    drifted: Mapped[bool] = mapped_column(Boolean)  # this window drifted
    flagged: Mapped[bool] = mapped_column(Boolean)  # the sequential test flagged it
    trigger: Mapped[bool] = mapped_column(Boolean)  # retraining was started
    drift_share: Mapped[float] = mapped_column(Float)
    # Everything else the monitor said (schemas.CohortCheckReport).
    report: Mapped[dict] = mapped_column(JSON)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    else:
        engine = create_engine(
            url,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=True,
            connect_args=KEEPALIVE,
        )
    with migrating(engine):  # replicas starting together: one migrates
        migrate(engine)
    return engine


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# A database made before the fleet used Alembic (create_all, then columns added in
# place): the revision its schema matches, told by the newest column it has.
BEFORE_ALEMBIC = (("models", "class_prior", "0002"), ("models", "model_name", "0003"))


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest schema (edge_fleet/migrations), in place:
    a new one is made by the migrations, one from before them is stamped with the
    revision its tables match first."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        found = inspect(connection)
        tables = set(found.get_table_names())
        if "alembic_version" not in tables and "models" in tables:
            revision = "0001"
            for table, column, since in BEFORE_ALEMBIC:
                if column in {c["name"] for c in found.get_columns(table)}:
                    revision = since
            command.stamp(config, revision)
        command.upgrade(config, "head")


def make_sessions(url: str) -> sessionmaker:
    return sessionmaker(make_engine(url), expire_on_commit=False)
