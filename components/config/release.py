"""params.yaml's release side: optimization profiles, gates, registry, serving, the
fleet's rollouts and drift monitoring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict


class DeviceProfile(Strict):
    """A class of device and its budgets; null means no limit of that kind."""

    # The device's runtime: `default`, the file's own (ONNX Runtime for .onnx,
    # LiteRT for .tflite); `micro`, TensorFlow Lite Micro running a full-integer
    # int8 file in a fixed tensor arena, as a microcontroller's firmware does.
    runtime: Literal["default", "micro"] = "default"
    max_model_kb: float | None = Field(None, gt=0)  # storage for the file
    max_ram_kb: float | None = Field(None, gt=0)  # weights + peak activations
    # Address-space limit of the infra-validation process that loads the file in
    # its device runtime and answers queries; null: no limit (not for micro).
    runtime_memory_mb: int | None = Field(None, ge=64)
    # micro: the flash the model file may take.
    max_flash_kb: float | None = Field(None, gt=0)
    # micro: the RAM the tensor arena may take (the board's arena), against the
    # arena TFLM's recording allocator measures plus arena_margin.
    max_arena_kb: float | None = Field(None, gt=0)
    # micro: added to the measured arena (the host's 64-bit structs and alignment
    # are not a Cortex-M's).
    arena_margin: float = Field(0.1, ge=0, le=1)
    # The runtime's threads on this device (ONNX Runtime intra-op, LiteRT
    # num_threads): the variants are timed with these to choose this profile's file.
    threads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _budgets_of_its_runtime(self) -> DeviceProfile:
        if self.runtime == "micro":
            if self.max_flash_kb is None or self.max_arena_kb is None:
                raise ValueError(
                    "runtime micro needs max_flash_kb and max_arena_kb (a board's "
                    "flash and RAM for the model)"
                )
            if self.runtime_memory_mb is not None or self.max_ram_kb is not None:
                raise ValueError(
                    "runtime micro is budgeted by max_flash_kb and max_arena_kb; "
                    "expected no runtime_memory_mb or max_ram_kb"
                )
        elif self.max_flash_kb is not None or self.max_arena_kb is not None:
            raise ValueError(
                "max_flash_kb and max_arena_kb are a micro profile's budgets; "
                "expected runtime: micro"
            )
        return self


class OptimizeConfig(Strict):
    prune_amount: float = Field(0.5, ge=0, lt=1)
    # Epochs of fine-tuning after pruning.
    finetune_epochs: int = Field(5, ge=0)
    calibration_samples: int = Field(200, ge=1)
    # Accuracy points a variant may lose against the framework model on the test
    # split; refused only when also worse beyond chance (drop_test_alpha).
    max_accuracy_drop: float = Field(0.01, ge=0, le=1)
    # Significance of the paired test (exact McNemar on the test rows where the
    # variant and the framework model differ) that a drop over the budget must
    # pass to refuse the variant: one row on a small test set is not evidence.
    drop_test_alpha: float = Field(0.05, gt=0, le=1)
    # Single-row inferences timed per variant.
    latency_runs: int = Field(300, ge=10)
    # Rows a variant must answer in its runtime's own process.
    infra_samples: int = Field(8, ge=1)
    # The variant that ships to devices: the gate judges this file in its runtime.
    ship_variant: str = "int8_static"
    # Each profile's best file, recorded on the version (`ship_per_profile`):
    # `measured`, the fastest accepted variant that fits the profile, timed in its
    # runtime with its threads (within `latency_tie` of the fastest: the smallest
    # file); `fixed`, ship_variant for every profile it fits.
    ship_choice: Literal["measured", "fixed"] = "measured"
    latency_tie: float = Field(0.05, ge=0, le=1)
    profiles: dict[str, DeviceProfile] = Field(
        default_factory=lambda: {
            # A 1 MB flash / 256 KB RAM board (the book's nRF52840): 256 KB of
            # the flash and 64 KB of the RAM left to the firmware and the stack.
            "mcu": DeviceProfile(runtime="micro", max_flash_kb=768, max_arena_kb=192),
            "gateway": DeviceProfile(max_ram_kb=524288, runtime_memory_mb=512),
            "cloud": DeviceProfile(threads=2),
        },
        min_length=1,
    )


class GatesConfig(Strict):
    """What a new version must meet to become `challenger`."""

    # Lowest test accuracy a version may have.
    min_test_accuracy: float = Field(0.95, ge=0, le=1)
    # Accuracy points a version may lose against the champion on the same test
    # rows; refused only when also worse beyond chance (drop_test_alpha).
    max_drop_vs_champion: float = Field(0.01, ge=0, le=1)
    # Significance of the paired test (exact McNemar on the test rows where the
    # version and the champion differ) that a drop over the budget must pass.
    drop_test_alpha: float = Field(0.05, gt=0, le=1)
    max_ship_kb: float | None = Field(256, gt=0)
    max_ship_latency_ms: float | None = Field(1.0, gt=0)
    require_ship_accepted: bool = True


class ServingConfig(Strict):
    # Serving answers with the version behind this alias.
    alias: str = "champion"
    # fp32: the full-precision device file (ONNX or TFLite); ship: optimize.ship_variant
    variant: Literal["fp32", "ship"] = "fp32"
    # Most rows one request may send.
    max_request_rows: int = Field(256, ge=1)
    max_request_bytes: int = Field(2**20, ge=1024)  # refused with 413 unread
    poll_s: float = Field(2.0, gt=0)  # how often the alias is checked for a new version
    # Share of requests logged for drift monitoring.
    log_sample_rate: float = Field(0.1, ge=0, le=1)
    # Rows per file of the prediction log.
    log_rows_per_file: int = Field(1000, ge=1)
    # BentoML worker processes, each with the model loaded once; null: one per core
    workers: int | None = Field(None, ge=1, le=64)
    # rows run as one batch at most (requests that arrive while the model is busy)
    max_batch_rows: int = Field(256, ge=1)
    # BentoML's access log, one line per request (off: its cost, and its growth)
    access_log: bool = False


class RegistryConfig(Strict):
    # The registered model the pipeline, serving and the fleet use.
    model_name: str = Field(min_length=1)
    gates: GatesConfig = GatesConfig()
    # auto: a challenger that is at least as accurate as the champion is promoted;
    # manual: a person promotes (MLflow UI or `edgeloop promote`).
    promotion: Literal["auto", "manual"] = "auto"


class RolloutChecks(Strict):
    """How a rollout stage is judged, on the model as devices run it, against the
    previous version on the same devices."""

    # Least share of a stage's reporting devices that must install the version.
    min_install_success: float = Field(0.95, ge=0, le=1)
    max_error_rate: float = Field(0.05, ge=0, le=1)  # inference errors / inferences
    max_latency_ratio: float = Field(2.0, gt=0)  # median latency, new / previous
    # A new version whose median single-sample latency is at or under this is not
    # judged on latency: sub-millisecond timings taken by a busy device process are
    # dominated by scheduling noise (7.8x between two versions of the same speed
    # was seen in `make run`).
    min_latency_ms: float = Field(1.0, ge=0)
    max_confidence_drop: float = Field(0.10, ge=0, le=1)  # mean top-1 confidence
    max_class_shift: float = Field(0.25, ge=0, le=1)  # total variation distance
    # Class shift is judged only on this many predicted rows per class (of the new
    # version, the devices weighing the same): between two samples of the same
    # model, the distance is noise of about 0.5/sqrt(rows per class), so 16 rows
    # each from 2 devices measured 0.26 for a byte-identical file. A stage waits
    # for them until it times out, then is judged on what arrived.
    min_rows_per_class: int = Field(20, ge=1)
    # Fleet-wide stop: devices failed on this rollout, percent of the whole fleet.
    abort_failed_percent: float = Field(20.0, gt=0, le=100)


class FleetConfig(Strict):
    canary_percent: float = Field(10.0, gt=0, le=100)
    canary_cohort: str | None = None  # a named cohort instead of a percent
    waves: list[float] = Field(default_factory=lambda: [50.0])  # then 100 (full)
    bake_s: float = Field(5.0, ge=0)  # minimum time a stage runs before judging
    stage_timeout_s: float = Field(120.0, gt=0)  # judge with what has reported then
    min_reported: float = Field(0.9, gt=0, le=1)  # share of a stage that must report
    # At stage_timeout_s a stage is judged on the devices that reported, if at
    # least this share of its devices did; short of it, the rollout pauses (the
    # silent devices named in its events) for a person to resume, abort or roll
    # back. Silence is never counted as a failed install.
    quorum: float = Field(0.5, gt=0, le=1)
    checks: RolloutChecks = RolloutChecks()
    poll_s: float = Field(2.0, gt=0)  # device check-in interval
    # A device not seen for this long is offline: not counted in a stage's health.
    offline_after_s: float = Field(60.0, gt=0)
    poll_jitter: float = Field(0.5, ge=0, le=1)  # +- share of poll_s
    # The agent's longest wait between tries when the server does not answer.
    max_backoff_s: float = Field(60.0, gt=0)
    # Check-ins per device: a burst of checkin_burst, then at most one every
    # checkin_min_interval_s (default: half the shortest jittered poll interval,
    # poll_s * (1 - poll_jitter) / 2); more are answered 429 with Retry-After.
    checkin_burst: int = Field(10, ge=1)
    checkin_min_interval_s: float | None = Field(None, gt=0)
    telemetry_batch: int = Field(64, ge=1)  # inferences summarised per report
    # Raw check-in reports are kept this long (rollouts and drift checks read the
    # recent ones), then summarised per device, version and window; windows are
    # kept telemetry_window_retention_days (edge_fleet/retention.py).
    telemetry_retention_s: int = Field(3600, ge=60)
    telemetry_window_s: int = Field(3600, ge=60)
    # How long the per-window summaries of old telemetry are kept.
    telemetry_window_retention_days: int = Field(90, ge=1)
    # A device refreshes TUF metadata at least this often, whatever the server's
    # (unsigned) hint says, and reports `stale_metadata` when it cannot.
    max_metadata_age_s: float = Field(300.0, gt=0)
    # Request bodies, refused with 413 before they are read: a check-in, a model
    # file uploaded by a release, anything else (enrollment, admin actions).
    max_telemetry_bytes: int = Field(65536, ge=1024)
    max_model_bytes: int = Field(64 * 2**20, ge=1024)
    max_request_bytes: int = Field(16384, ge=1024)
    # TUF metadata lifetimes. The server re-signs timestamp, snapshot and targets
    # when half their lifetime is left; root is signed offline (`edgeloop fleet
    # keys renew`), so it lives long, and `edgeloop status` warns 90 days ahead.
    timestamp_expiry_s: int = Field(86400, ge=60)
    metadata_expiry_days: int = Field(30, ge=1)  # snapshot / targets
    root_expiry_days: int = Field(1825, ge=30)
    # Root keys made by `edgeloop fleet keys init` and how many must sign a root:
    # 1 of 1 for the embedded default (`edgeloop status` warns), 2 of 3 or more
    # kept apart for a fleet that matters.
    root_keys: int = Field(1, ge=1, le=16)
    root_threshold: int = Field(1, ge=1, le=16)
    # Simulator: cohorts, the profile mix, and cohorts that share raw input samples.
    cohorts: list[str] = Field(
        default_factory=lambda: ["north", "south", "east"], min_length=1
    )
    # The simulator's devices: share of each profile.
    profile_mix: dict[str, float] = Field(
        default_factory=lambda: {"mcu": 0.5, "gateway": 0.3, "cloud": 0.2}
    )
    sample_cohorts: list[str] = Field(default_factory=list)

    @property
    def checkin_interval_s(self) -> float:
        """The shortest interval between a device's check-ins, past its burst."""
        if self.checkin_min_interval_s is not None:
            return self.checkin_min_interval_s
        return self.poll_s * max(1 - self.poll_jitter, 0.1) / 2

    @model_validator(mode="after")
    def _threshold_within_keys(self) -> FleetConfig:
        if self.root_threshold > self.root_keys:
            raise ValueError(
                f"fleet.root_threshold {self.root_threshold}: expected at most "
                f"fleet.root_keys ({self.root_keys})"
            )
        return self

    @model_validator(mode="after")
    def _waves_rise(self) -> FleetConfig:
        stages = [self.canary_percent, *self.waves]
        if any(b <= a for a, b in zip(stages, stages[1:], strict=False)) or any(
            w >= 100 for w in self.waves
        ):
            raise ValueError(
                f"fleet.waves {self.waves}: expected rising percents above "
                f"canary_percent {self.canary_percent} and below 100 (full comes last)"
            )
        return self


class MonitoringConfig(Strict):
    """Drift checks: windows, Evidently methods and thresholds, and the trigger.

    Wasserstein distance (normed by the reference's spread) is an effect size, not a
    p-value, so its verdict does not flip as windows grow (K-S and chi-square do)."""

    serving_window_rows: int = Field(500, ge=10)  # last N logged predictions
    device_window_reports: int = Field(100, ge=10)  # last N telemetry reports/cohort
    # Smaller windows get no verdict. Serving: at 100 rows the normed Wasserstein
    # distance of a window from the reference's own distribution passes 0.1 on too
    # many columns (bench/drift_false_alarms.py: 100% false alarms at 100 rows, 0% at
    # 500); devices: 0% at 50 reports.
    serving_min_rows: int = Field(300, ge=5)
    device_min_reports: int = Field(30, ge=5)
    # A device is one vote in its cohort's window: at most this many of its newest
    # reports are in the window, and a window of fewer devices is not judged (one
    # device's flood, or its broken sensor, is not the cohort drifting).
    max_reports_per_device: int = Field(20, ge=1)
    min_devices: int = Field(2, ge=1)
    reference_batches: int = Field(300, ge=30)  # batch-mean rows drawn for devices
    # A target's own labelled rows in the champion's data
    # (paths.incoming/<data name>/<target>/)
    # become its reference from this many on (monitoring/reference.py).
    target_reference_min_rows: int = Field(200, ge=10)
    delayed_labels_min_rows: int = Field(50, ge=5)  # accuracy on newer labels
    # The dashboards' per-column verdicts (and each device's vote in a cohort):
    num_method: str = "wasserstein"
    num_threshold: float = Field(0.1, gt=0)  # per column
    drift_share: float = Field(0.3, gt=0, le=1)  # drifted columns share: window drifts
    # The decision (monitoring/sequential.py): expected false alarms per target per
    # month with no drift (an e-detector's bound, at the target's measured rate of
    # observations), and the false discovery rate across the targets flagged at
    # one pass (e-BH).
    false_alarm_level: float = Field(0.05, gt=0, lt=1)
    # The smallest drift of a column: a mean shift of this many standard
    # deviations of one input (drift on fewer than drift_share of the columns
    # counts proportionally less).
    min_effect: float = Field(0.1, gt=0, le=3)
    # An Evidently snapshot per target when its status changes, and at least
    # this often (the verdicts need none: each costs seconds per window).
    snapshot_interval_s: float = Field(3600.0, ge=0)
    cooldown_s: float = Field(600.0, ge=0)  # after a trigger, per target
    schedule_cron: str = "0 * * * *"  # the monitor deployment's schedule
    retrain_cron: str = "0 3 * * 0"  # training_pipeline's schedule (weekly)
