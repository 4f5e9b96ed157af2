"""The sequential drift test (monitoring/sequential.py) by simulation: without
drift, the share of streams with a false alarm stays within the e-detector's
bound however long they are watched; a shift is found within a few dozen
observations; e-BH flags a set whose false discovery proportion stays at its
level across many cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.config import MonitoringConfig
from monitoring import sequential

COLUMNS = [f"f{j}" for j in range(12)]
CFG = MonitoringConfig()
NEAR_FAIR = MonitoringConfig(min_effect=1e-3)  # bets on any move at all


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    x = rng.standard_t(df=5, size=(n, len(COLUMNS)))
    x[:, :4] += shift  # a third of the columns move
    return pd.DataFrame(x, columns=COLUMNS)


@pytest.fixture(scope="module")
def null() -> sequential.Null:
    return sequential.Null.of(_rows(np.random.default_rng(0), 4000), [])


def _first_alarm(
    y: np.ndarray, limit: float, evidence: sequential.Evidence | None = None
) -> int | None:
    """The observation at which the e-detector first reaches `limit` (1-based)."""
    evidence = evidence or sequential.Evidence()
    for i, outcome in enumerate(y, start=1):
        sequential.observe_outcomes(evidence, np.asarray([outcome]), window=100)
        if evidence.statistic >= limit:
            return i
    return None


def test_without_drift_false_alarms_stay_within_the_e_detector_s_bound(null):
    """P(an alarm within T observations) <= T / c for the mixture of CUSUMs (its
    statistic is at most the Shiryaev-Roberts sum, whose mean is at most T), at a
    minimum effect near zero, where the bet is closest to fair."""
    rng = np.random.default_rng(1)
    streams, length, limit = 300, 200, 2000.0
    alarms = 0
    for _ in range(streams):
        evidence = sequential.Evidence()
        y = sequential.observe(evidence, null, _rows(rng, length), NEAR_FAIR)
        assert y.min() >= -1  # every bet keeps the wealth positive
        alarms += _first_alarm(y, limit) is not None
    assert alarms / streams <= length / limit  # 0.1


def test_scores_average_zero_on_new_rows_of_the_reference_s_distribution(null):
    """Where a new row lies (r) and how far out (|r| less its reference mean)
    average 0 in every column, within the 2,000 reference rows' own sampling
    error (about 0.013): what makes each bet fair without drift (min_effect's
    delta, 0.056 at 0.1, covers that error)."""
    ranks = null.ranks(_rows(np.random.default_rng(2), 20000))
    assert ranks.shape == (20000, 2 * len(COLUMNS))
    assert np.abs(ranks.mean(axis=0)).max() < 0.04
    assert sequential.min_delta(CFG.min_effect) > 0.04
    assert ranks.min() >= -1 and ranks.max() <= 1


def test_ties_count_half_so_a_constant_column_scores_zero_until_it_moves():
    reference = pd.DataFrame({"lit": np.zeros(100), "x": np.arange(100.0)})
    null = sequential.Null.of(reference, [])
    [same, moved] = null.ranks(pd.DataFrame({"lit": [0.0, 0.5], "x": [49.5, 49.5]}))
    assert same[0] == 0 and same[2] == 0  # r and |r| of the unlit pixel
    assert moved[0] == 1 and moved[2] == 1  # lit: as far out as can be


@pytest.mark.parametrize(("shift", "typical", "worst"), [(1.0, 90, 150), (3.0, 40, 45)])
def test_a_shift_is_found_within_dozens_of_observations(null, shift, typical, worst):
    """A third of the columns moved by `shift` (t, 5 degrees of freedom: 0.77 and
    2.3 standard deviations), alarm level 1e6: detection delays over 20 streams."""
    rng = np.random.default_rng(3)
    delays = []
    for _ in range(20):
        evidence = sequential.Evidence()
        y = sequential.observe(evidence, null, _rows(rng, 200, shift), CFG)
        delays.append(_first_alarm(y, 1e6) or 10**6)
    assert np.median(delays) <= typical and max(delays) <= worst, delays


def test_a_drift_after_a_long_quiet_spell_is_found_as_fast(null):
    """The CUSUM restarts its bets: 3,000 quiet observations first cost nothing
    (a test martingale from the start would first win back what it lost)."""
    rng = np.random.default_rng(4)
    quiet = sequential.Evidence()
    sequential.observe(quiet, null, _rows(rng, 3000), CFG)
    assert quiet.statistic < 10
    drifting = _rows(rng, 100, 1.0)
    fresh = sequential.Evidence()
    y_fresh = sequential.observe(fresh, null, drifting, CFG)
    y_after = sequential.observe(quiet, null, drifting, CFG)
    after, first = _first_alarm(y_after, 1e6), _first_alarm(y_fresh, 1e6)
    assert first is not None and after is not None and after <= first + 5


def test_ebh_picks_the_largest_self_consistent_set():
    evalues = {"a": 100.0, "b": 30.0, "c": 15.0, "d": 0.5}
    # k=3: 15 >= 4 / (3 * 0.1) = 13.3; k=4: 0.5 < 10
    assert sequential.ebh(evalues, 0.1) == {"a", "b", "c"}
    assert sequential.ebh(evalues, 0.02) == set()  # 100 < 4 / 0.02 = 200
    assert sequential.ebh({"a": 250.0, "b": 1.0}, 0.02) == {"a"}  # 250 >= 100
    assert sequential.ebh({}, 0.05) == set()


def test_across_many_cohorts_the_flagged_set_keeps_its_false_discovery_rate(null):
    """300 cohorts, 15 of them drifting: the flagged set's false discovery
    proportion, averaged over passes, at most the level; most drifting cohorts
    flagged."""
    cfg = MonitoringConfig(false_alarm_level=0.05, min_effect=0.05)
    rng = np.random.default_rng(5)
    proportions, found = [], []
    for _ in range(4):
        evalues, drifting = {}, set()
        for i in range(300):
            shift = 1.0 if i < 15 else 0.0
            if shift:
                drifting.add(f"c{i}")
            evidence = sequential.Evidence(first_at=0.0, last_at=3600.0, seen=100)
            sequential.observe(evidence, null, _rows(rng, 100, shift), cfg)
            alarm = evidence.statistic >= sequential.threshold(evidence, cfg, 1e6)
            evalues[f"c{i}"] = evidence.evalue() if alarm else 0.0
        flagged = sequential.ebh(evalues, cfg.false_alarm_level)
        proportions.append(len(flagged - drifting) / max(len(flagged), 1))
        found.append(len(flagged & drifting) / len(drifting))
    assert np.mean(proportions) <= cfg.false_alarm_level
    assert np.mean(found) >= 0.9


def test_the_alarm_level_is_the_month_s_observations_over_the_level():
    cfg = MonitoringConfig(false_alarm_level=0.05)
    hourly = sequential.Evidence(first_at=0.0, last_at=99 * 3600.0, seen=100)
    # 100 observations in 99 hours: about 727 a month, so 14,545
    assert sequential.threshold(hourly, cfg, 1e6) == pytest.approx(
        100 / (99 * 3600) * sequential.MONTH_S / 0.05
    )
    assert sequential.threshold(sequential.Evidence(), cfg, 1e6) == 1e6 / 0.05
