"""How a stage is judged: each check names itself, its value and its threshold."""

from __future__ import annotations

import pytest

from components.config import FleetConfig
from edge_fleet.checks import (
    StageEvidence,
    class_rows_needed,
    effective_rows,
    judge,
    total_variation,
)
from edge_fleet.controller import stages
from edge_fleet.db import Telemetry
from edge_fleet.device.scope import bucket, in_scope


def _t(version: str, **kw: object) -> Telemetry:
    values = {
        "inferences": 100,
        "errors": 0,
        "latency_ms_median": 0.05,
        "latency_ms_p95": 0.08,
        "confidence_mean": 0.95,
        "class_counts": {"0": 50, "1": 50},
    } | kw
    return Telemetry(
        device_id="d", cohort="c", version=version, feature_stats={}, **values
    )


def _evidence(new: list[Telemetry], *, installed: int = 10, failed: int = 0):
    return StageEvidence(10, installed, failed, new, [_t("1"), _t("1")])


CFG = FleetConfig()


def test_a_healthy_stage_passes():
    assert judge(_evidence([_t("2"), _t("2")]), "canary", CFG) is None


def _bench(ms: float, previous: float) -> dict:
    return {"version": "2", "ms": ms, "previous_version": "1", "previous_ms": previous}


def test_latency_is_judged_on_the_devices_benchmarks_where_they_took_one():
    """Both files timed together in the smoke test: a 3x slower file fails though
    its telemetry median looks like the old one's; a benchmark at 1.1x passes though
    telemetry taken at another moment (a busy device) says 30x."""
    slow = _evidence([_t("2", latency_ms_median=0.05, benchmark=_bench(3.0, 1.0))])
    cause = judge(slow, "canary", CFG)
    assert cause is not None and cause.check == "latency_ratio" and cause.value == 3.0
    assert "on-device benchmark (1 devices)" in cause.detail
    busy = _evidence([_t("2", latency_ms_median=1.5, benchmark=_bench(1.1, 1.0))])
    assert judge(busy, "canary", CFG) is None
    floor = _evidence([_t("2", benchmark=_bench(0.3, 0.01))])  # under 1 ms: noise
    assert judge(floor, "canary", CFG) is None
    # A benchmark of another version than the report's, or without a previous
    # file, is not evidence: the telemetry medians judge.
    stray = _bench(9.0, 1.0) | {"version": "7"}
    old = _evidence([_t("2", latency_ms_median=1.5, benchmark=stray)])
    assert "telemetry" not in judge(old, "canary", CFG).detail
    assert judge(old, "canary", CFG).detail.startswith("median device's single")


def test_sub_millisecond_latency_noise_is_not_a_regression():
    """`make run`'s canary was rolled back on 0.04 -> 0.33 ms (7.8x) between two
    versions of the same speed: under fleet.checks.min_latency_ms no verdict."""
    noisy = _evidence([_t("2", latency_ms_median=0.33)])
    assert judge(noisy, "canary", CFG) is None
    slow = _evidence([_t("2", latency_ms_median=1.2)])
    cause = judge(slow, "canary", CFG)
    assert cause is not None and cause.check == "latency_ratio"


@pytest.mark.parametrize(
    ("evidence", "check"),
    [
        (_evidence([_t("2")], installed=8, failed=2), "install_success"),
        (_evidence([_t("2", errors=20)]), "error_rate"),
        (_evidence([_t("2", latency_ms_median=1.5)]), "latency_ratio"),
        (_evidence([_t("2", confidence_mean=0.6)]), "confidence_drop"),
        (_evidence([_t("2", class_counts={"0": 95, "1": 5})]), "class_shift"),
    ],
)
def test_each_failed_check_is_named_with_value_and_threshold(evidence, check):
    cause = judge(evidence, "wave-1", CFG)
    assert cause is not None and cause.check == check
    assert cause.stage == "wave-1"
    limits = CFG.checks
    threshold = {
        "install_success": limits.min_install_success,
        "error_rate": limits.max_error_rate,
        "latency_ratio": limits.max_latency_ratio,
        "confidence_drop": limits.max_confidence_drop,
        "class_shift": limits.max_class_shift,
    }[check]
    assert cause.threshold == threshold
    assert cause.value != threshold and cause.detail


def _fleet(version: str, n: int, **kw: object) -> list[Telemetry]:
    """One report from each of n devices."""
    rows = [_t(version, **kw) for _ in range(n)]
    for i, row in enumerate(rows):
        row.device_id = f"{version}-dev-{i}"
    return rows


def _forged(version: str, reports: int, **kw: object) -> list[Telemetry]:
    """Many reports from one device, each claiming a full batch."""
    rows = [_t(version, **kw) for _ in range(reports)]
    for row in rows:
        row.device_id = "forger"
    return rows


@pytest.mark.parametrize(
    ("claim", "check"),
    [
        ({"errors": 100}, "error_rate"),
        ({"latency_ms_median": 50.0}, "latency_ratio"),
        ({"confidence_mean": 0.1}, "confidence_drop"),
        ({"class_counts": {"7": 100}}, "class_shift"),
    ],
)
def test_one_device_cannot_veto_a_stage_its_peers_pass(claim, check):
    """A device's vote does not grow with the reports or inferences it claims: 40
    reports of a broken model from one device against one each from 4 healthy
    devices do not roll the stage back; the same reports from most devices do."""
    previous = _fleet("1", 5, latency_ms_median=2.0)
    healthy = _fleet("2", 4, latency_ms_median=2.0)
    evidence = StageEvidence(5, 5, 0, healthy + _forged("2", 40, **claim), previous)
    assert judge(evidence, "canary", CFG) is None
    broken = _fleet("2", 4, **({"latency_ms_median": 2.0} | claim))
    evidence = StageEvidence(5, 5, 0, broken + _fleet("2", 1), previous)
    cause = judge(evidence, "canary", CFG)
    assert cause is not None and cause.check == check


def test_one_device_cannot_pass_a_stage_its_peers_fail():
    broken = _fleet("2", 4, errors=50)
    forged = _forged("2", 40)  # many clean reports of full batches
    evidence = StageEvidence(5, 5, 0, broken + forged, _fleet("1", 5))
    cause = judge(evidence, "canary", CFG)
    assert cause is not None and cause.check == "error_rate"


def test_silent_devices_are_never_failed_installs():
    """Judged on the devices that reported, before and at the deadline (the
    controller pauses a stage short of its quorum instead)."""
    waiting = StageEvidence(10, 5, 0, [_t("2")], [_t("1")])
    assert judge(waiting, "canary", CFG) is None
    assert judge(waiting, "canary", CFG, timed_out=True) is None
    failing = StageEvidence(10, 5, 1, [_t("2")], [_t("1")])
    cause = judge(failing, "canary", CFG, timed_out=True)
    assert cause is not None and cause.check == "install_success"
    assert cause.value == round(5 / 6, 4)
    assert "5 of 6 reporting devices installed (1 failed; 4 silent" in cause.detail


def test_first_rollout_without_baseline_is_judged_on_installs_and_errors():
    evidence = StageEvidence(4, 4, 0, [_t("1", class_counts={"3": 9})], [])
    assert judge(evidence, "canary", CFG) is None


def test_stages_and_scopes():
    plan = stages(FleetConfig(canary_percent=5, waves=[25, 50]))
    assert [(s.name, s.percent) for s in plan] == [
        ("canary", 5),
        ("wave-1", 25),
        ("wave-2", 50),
        ("full", 100),
    ]
    named = stages(FleetConfig(canary_cohort="north"))[0]
    assert named.cohorts == ("north",) and named.percent == 0
    ids = [f"d{i}" for i in range(2000)]
    share = sum(in_scope({"basis_points": 1000}, d, "x", "mcu") for d in ids) / 2000
    assert 0.08 < share < 0.12  # 10% of devices, by a stable hash
    assert bucket("d1") == bucket("d1")
    assert in_scope({"cohorts": ["north"], "basis_points": 0}, "d1", "north", "mcu")
    assert not in_scope({"profiles": ["gateway"]}, "d1", "north", "mcu")
    with pytest.raises(ValueError, match="rising percents"):
        FleetConfig(canary_percent=30, waves=[20])


def test_total_variation():
    assert total_variation({"a": 1}, {"a": 5}) == 0
    assert total_variation({"a": 1}, {"b": 1}) == 1
    assert total_variation({"a": 1, "b": 1}, {"a": 1}) == pytest.approx(0.5)


def test_class_shift_is_measured_against_the_training_classes_when_known():
    """A model retrained for drifted inputs moves its predictions back to the
    training classes: a big change from the previous version, and no failure; a
    collapse moves them away and fails, with or without the prior."""
    prior = {"0": 0.5, "1": 0.5}
    collapsed_before = [_t("1", class_counts={"0": 95, "1": 5})] * 2
    fixed = [_t("2", class_counts={"0": 52, "1": 48})]
    assert judge(StageEvidence(10, 10, 0, fixed, collapsed_before), "w", CFG)
    assert (
        judge(StageEvidence(10, 10, 0, fixed, collapsed_before, prior), "w", CFG)
        is None
    )
    collapse = [_t("2", class_counts={"0": 98, "1": 2})]
    cause = judge(StageEvidence(10, 10, 0, collapse, [_t("1")], prior), "w", CFG)
    assert cause is not None and cause.check == "class_shift"
    assert cause.value == pytest.approx(0.48 - 0.0)
    assert "training class shares" in cause.detail


def _device(version: str, device: str, counts: dict[str, int]) -> Telemetry:
    row = _t(version, class_counts=counts, inferences=sum(counts.values()))
    row.device_id = device
    return row


def test_a_small_sample_is_not_a_class_shift_until_the_stage_times_out():
    """CI rolled back a byte-identical file at TV 0.2617 > 0.25: two canary devices
    had sent 16 rows each. Ten classes seen 32 times is a wobble, not a verdict:
    the stage waits for min_rows_per_class per class of the new version's rows."""
    prior = {str(k): 0.1 for k in range(10)}
    before = [_device("1", f"d{i}", {str(k): 16 for k in range(10)}) for i in (1, 2)]
    wobble = {"0": 4, "1": 3, "2": 3, "3": 2, "4": 2, "5": 1, "6": 1}
    new = [_device("2", "d1", wobble), _device("2", "d2", wobble)]
    small = StageEvidence(2, 2, 0, new, before, prior)
    assert class_rows_needed(small, CFG.checks) == 200 - 32
    assert judge(small, "canary", CFG) is None
    # At the stage timeout it is judged on what arrived: the safe side.
    cause = judge(small, "canary", CFG, timed_out=True)
    assert cause is not None and cause.check == "class_shift" and cause.value > 0.25
    # The same shares over enough rows are a real shift, judged before the timeout.
    many = {k: 10 * v for k, v in wobble.items()}
    big = StageEvidence(2, 2, 0, [_device("2", "d1", many)] * 2, before, prior)
    assert class_rows_needed(big, CFG.checks) == 0
    cause = judge(big, "canary", CFG)
    assert cause is not None and cause.check == "class_shift"


def test_rows_count_as_the_devices_weigh():
    """A device that claims a thousand rows does not stand in for a quiet peer; a
    device that predicted nothing does not hold the stage back."""
    busy = _device("2", "busy", {"0": 1000})
    quiet = _device("2", "quiet", {"0": 10})
    assert effective_rows([busy, quiet]) == pytest.approx(4 / (1 / 1000 + 1 / 10))
    assert effective_rows([busy, _device("2", "mute", {})]) == 1000


def test_a_reported_benchmark_must_be_of_the_reported_version():
    from pydantic import ValidationError

    from edge_fleet.server.schemas import TelemetryBatch

    report = {
        "version": "2",
        "inferences": 2,
        "errors": 0,
        "latency_ms_median": 0.1,
        "latency_ms_p95": 0.2,
        "confidence_mean": 0.9,
        "class_counts": {"0": 2},
        "feature_stats": {"mean": [0.0], "std": [0.0], "min": [0.0], "max": [0.0]},
        "benchmark": _bench(0.5, 0.4),
    }
    assert TelemetryBatch.model_validate(report).benchmark.ms == 0.5
    stray = report | {"benchmark": _bench(0.5, 0.4) | {"version": "3"}}
    with pytest.raises(ValidationError, match="benchmark.version '3': expected"):
        TelemetryBatch.model_validate(stray)
    infinite = report | {"benchmark": _bench(float("inf"), 0.4)}
    with pytest.raises(ValidationError):
        TelemetryBatch.model_validate(infinite)
