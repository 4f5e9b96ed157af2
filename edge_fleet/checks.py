"""The checks that judge a rollout stage: install success, error rate, and, against
the previous version on the same devices, latency, confidence and the predicted
classes (or the new version's training class shares).

Each device has one vote on each check, however many reports or inferences it
claims: error rate, latency and confidence are the median device's (its own
reports pooled), and predicted-class shares are each device's shares averaged
with equal weight. One device's reports, forged or broken, can neither veto nor
pass a stage that its peers judge otherwise."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from components.config import FleetConfig, RolloutChecks
from edge_fleet.db import Telemetry


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


def failed(cause: Cause) -> bool:
    """Whether a measurement fails its check (install success fails below its
    threshold, every other check above)."""
    if cause.check == "install_success":
        return cause.value < cause.threshold
    return cause.value > cause.threshold


def measure(
    evidence: StageEvidence, stage: str, cfg: FleetConfig, *, timed_out: bool = False
) -> list[Cause]:
    """Every check that has a verdict on this evidence, passed or failed, in the
    order they are judged (what a stage's event records, and the console shows).
    Without a previous version's telemetry on the same devices (a first rollout)
    only installs and errors are measured."""
    checks = cfg.checks
    found = [
        measure_install_success(evidence, checks, stage),
        measure_error_rate(evidence, checks, stage),
    ]
    if evidence.new and evidence.previous:
        found += [
            measure_latency_ratio(evidence, checks, stage),
            measure_confidence_drop(evidence, checks, stage),
            measure_class_shift(evidence, checks, stage, timed_out),
        ]
    return [c for c in found if c is not None]


def judged(measured: list[Cause]) -> list[dict]:
    """The checks as a stage's event records them: check, value, threshold,
    detail, and whether it failed."""
    return [
        {
            "check": c.check,
            "value": c.value,
            "threshold": c.threshold,
            "failed": failed(c),
            "detail": c.detail,
        }
        for c in measured
    ]


def judge(
    evidence: StageEvidence, stage: str, cfg: FleetConfig, *, timed_out: bool = False
) -> Cause | None:
    """The first failed check of a stage, in order, or None when it is healthy.
    Devices that have not reported are not judged: silence is not a failed install
    (the controller pauses a stage short of its quorum instead)."""
    return next(
        (c for c in measure(evidence, stage, cfg, timed_out=timed_out) if failed(c)),
        None,
    )


def install_success(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    """Installed of the devices that reported, when under the threshold."""
    return _failing(measure_install_success(evidence, checks, stage))


def error_rate(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    return _failing(measure_error_rate(evidence, checks, stage))


def latency_ratio(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    return _failing(measure_latency_ratio(evidence, checks, stage))


def confidence_drop(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    return _failing(measure_confidence_drop(evidence, checks, stage))


def class_shift(
    evidence: StageEvidence, checks: RolloutChecks, stage: str, timed_out: bool
) -> Cause | None:
    return _failing(measure_class_shift(evidence, checks, stage, timed_out))


def _failing(cause: Cause | None) -> Cause | None:
    return cause if cause is not None and failed(cause) else None


def class_rows_needed(evidence: StageEvidence, checks: RolloutChecks) -> int:
    """Rows of the new version still missing before class shift has a verdict (0
    when it has one). The new version's rows are counted as the devices weigh:
    D devices with n_i rows each weigh as D^2 / sum(1/n_i) rows, so one busy
    device does not stand in for its quiet peers (a device that predicted
    nothing, all errors, is left out: it cannot hold a stage back)."""
    if not evidence.previous:
        return 0
    classes = set(evidence.prior or {}) | set(_class_counts(evidence.previous))
    classes |= set(_class_counts(evidence.new))
    needed = checks.min_rows_per_class * max(len(classes), 2)
    return max(0, needed - int(effective_rows(evidence.new)))


def effective_rows(rows: list[Telemetry]) -> float:
    """Predicted rows as the equal-weight average of each device's shares sees them."""
    per_device = [
        sum(int(c) for t in reports for c in t.class_counts.values())
        for reports in by_device(rows)
    ]
    counted = [n for n in per_device if n > 0]
    return len(counted) ** 2 / sum(1 / n for n in counted) if counted else 0.0


def measure_install_success(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    """Installed of the devices that reported (installed or failed)."""
    reported = evidence.installed + evidence.failed
    success = evidence.installed / reported if reported else 1.0
    return Cause(
        "install_success",
        round(success, 4),
        checks.min_install_success,
        stage,
        f"{evidence.installed} of {reported} reporting devices installed "
        f"({evidence.failed} failed; {evidence.devices - reported} silent, not "
        "judged)",
    )


def by_device(rows: list[Telemetry]) -> list[list[Telemetry]]:
    """The reports grouped by the device that sent them."""
    groups: dict[str, list[Telemetry]] = {}
    for t in rows:
        groups.setdefault(t.device_id, []).append(t)
    return list(groups.values())


def _device_error_rate(rows: list[Telemetry]) -> float:
    inferences = sum(t.inferences for t in rows)
    return sum(t.errors for t in rows) / inferences if inferences else 0.0


def _benchmark(rows: list[Telemetry]) -> dict | None:
    """A device's latest benchmark of the version against a previous one."""
    for row in sorted(rows, key=lambda t: t.id or 0, reverse=True):
        b = row.benchmark
        if b and b.get("previous_ms") and b.get("version") == row.version:
            return b
    return None


def _device_latency(rows: list[Telemetry]) -> float:
    return statistics.median(t.latency_ms_median for t in rows)


def measure_error_rate(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    rates = [_device_error_rate(rows) for rows in by_device(evidence.new)]
    rate = statistics.median(rates) if rates else 0.0
    return Cause(
        "error_rate",
        round(rate, 4),
        checks.max_error_rate,
        stage,
        f"median error rate of {len(rates)} devices "
        f"({sum(r > checks.max_error_rate for r in rates)} over the threshold)",
    )


def measure_latency_ratio(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    """The new version's latency against the previous one's: from the devices'
    on-device benchmarks where they took one (both files timed together in the
    smoke test), else from their telemetry medians (taken at different times)."""
    timed = [b for b in map(_benchmark, by_device(evidence.new)) if b]
    if timed:
        new = statistics.median(b["ms"] for b in timed)
        if new <= checks.min_latency_ms:  # under the noise floor: no verdict
            return None
        ratio = statistics.median(b["ms"] / max(b["previous_ms"], 1e-6) for b in timed)
        return Cause(
            "latency_ratio",
            round(ratio, 3),
            checks.max_latency_ratio,
            stage,
            f"median device's on-device benchmark ({len(timed)} devices), new / "
            "previous version timed together in the smoke test",
        )
    new = statistics.median(map(_device_latency, by_device(evidence.new)))
    if new <= checks.min_latency_ms:  # under the noise floor: no verdict
        return None
    previous = statistics.median(map(_device_latency, by_device(evidence.previous)))
    ratio = new / max(previous, 1e-6)
    return Cause(
        "latency_ratio",
        round(ratio, 3),
        checks.max_latency_ratio,
        stage,
        "median device's single-sample latency, new / previous version",
    )


def measure_confidence_drop(
    evidence: StageEvidence, checks: RolloutChecks, stage: str
) -> Cause | None:
    drop = _median_confidence(evidence.previous) - _median_confidence(evidence.new)
    return Cause(
        "confidence_drop",
        round(drop, 4),
        checks.max_confidence_drop,
        stage,
        "median device's mean top-1 confidence, previous minus new version",
    )


def measure_class_shift(
    evidence: StageEvidence, checks: RolloutChecks, stage: str, timed_out: bool
) -> Cause | None:
    if class_rows_needed(evidence, checks) and not timed_out:
        return None  # a sampling wobble, not a verdict; the stage waits for more
    before, after = _class_counts(evidence.previous), _class_counts(evidence.new)
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
    return Cause("class_shift", round(shift, 4), checks.max_class_shift, stage, detail)


def _median_confidence(rows: list[Telemetry]) -> float:
    """The median device's mean top-1 confidence."""
    means = []
    for reports in by_device(rows):
        n = sum(t.inferences for t in reports)
        if n:
            means.append(sum(t.confidence_mean * t.inferences for t in reports) / n)
    return statistics.median(means) if means else 0.0


def _class_counts(rows: list[Telemetry]) -> dict[str, float]:
    """Predicted-class shares, each device's own shares weighing the same."""
    shares: dict[str, float] = {}
    devices = by_device(rows)
    for reports in devices:
        counts: dict[str, int] = {}
        for t in reports:
            for label, c in t.class_counts.items():
                counts[label] = counts.get(label, 0) + int(c)
        total = sum(counts.values())
        for label, c in counts.items():
            if total:
                shares[label] = shares.get(label, 0.0) + c / total / len(devices)
    return shares


def total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    """Between two class distributions given as counts or shares."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in keys)
