"""Drift decisions that stay valid however often the monitor looks.

Each target (serving, each cohort) keeps an **e-detector** (Shin, Ramdas and
Rinaldo, "E-detectors: a nonparametric framework for sequential change
detection", 2023) over its observations (a logged prediction's row; a device's
telemetry report), taken once each, in the order they arrived.

**The bet.** Each column of an observation is ranked within the reference sample:
`r = 2u - 1`, where `u` is the share of reference values below it (ties count
half). Without drift `r` averages 0 in every column; a column that moved has a
mean `r` away from 0 (Cliff's delta against the reference). A column counts as
moved by less than `monitoring.min_effect` (a mean shift, in standard deviations
of one input; of a device's batch summary, times sqrt(batch), as the dashboards'
thresholds) when its mean `r` is within `delta`, the Cliff's delta of that shift
on a normal curve: `2 Phi(min_effect x scale / sqrt 2) - 1`.
The score sides with the columns whose recent `r` (an exponentially weighted mean
of the earlier observations: known before the bet, so the bet is fair) moved past
`delta`, each by its sign and weighted by how far past (`|w_j|` in [0, 1]), and
subtracts `delta`:

    s = sum_j (w_j r_j - |w_j| delta) / max(sum_j |w_j|, share x max_j |w_j|)

where `share` is `monitoring.drift_share` x the columns.

A spread that changed (noise) may leave the mean `r` at 0, so each column is
scored twice: `r`, and `|r|` less its mean over the reference (how far out). With
no column moved by more than `delta`, `E[s] <= 0` whatever the weights. Drift on
fewer than `monitoring.drift_share` of the scores counts proportionally less (one
odd column cannot raise an alarm alone). `y = s / (1 + delta)` is in [-1, 1].

**A second bet, on gross drift.** The rank bet is bounded: a column far past
anything the reference holds scores no more than one just past it. So each
observation is also bet on its share of columns outside their range (the
reference's 0.5th to 99.5th percentile, set on half the reference rows) against
the share the other half shows plus `OUT_EFFECT` (5 points):
`y2 = (share - expected) / expected`, in [-1, ...), at most 0 on average without
such drift. Noise, or a sensor broken across a cohort, moves it fast.

**The detector.** A CUSUM e-detector bets on `y` and on `y2` at a few fixed
fractions each and averages them all (a mixture of e-detectors is one):

    C_k <- max(C_k, 1) * (1 + bet_k * y_k)        M = mean_k C_k

Without drift, `P(M reaches c within T observations) <= T / c` (M is at most the
Shiryaev-Roberts sum, whose mean is at most T), and the time to a false alarm is
at least `c` on average, whatever the schedule of checks: the monitor only reads
`M`. The alarm level is `c = observations per month / monitoring.false_alarm_level`
at the target's measured rate, so at most `false_alarm_level` false alarms per
target per month, in expectation.

**Across targets.** The targets flagged at one pass control the false discovery
rate with e-BH (Wang and Ramdas, "False discovery rate control with e-values",
2022; valid under any dependence between targets): each target's e-value is its
betting wealth over its window's last observations (a product of fair bets over
a fixed number of observations: an e-value at the pass), zero unless its detector
alarms (a smaller e-value is still one); e-BH at `monitoring.false_alarm_level`
picks the flagged set.

Why an e-detector and not a test martingale from the start: a drift that starts
after months of no drift is found as fast as one on day one (the CUSUM restarts
its bets; a test martingale would first have to win back months of lost bets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import erf

from components.config import MonitoringConfig

BETS = (0.05, 0.1, 0.2, 0.4, 0.7, 0.95)  # the mixture's fixed betting fractions
MEMORY = 16  # the scores' recent means: weights over about 16 observations
RANGE = 0.005  # a column's range: the reference's 0.5th to 99.5th percentile
OUT_EFFECT = 0.05  # beyond the usual share of columns out of range: drift
SAMPLE = 2000  # reference rows kept to rank against
MONTH_S = 30 * 24 * 3600.0
BIG = 1e300  # a detector far past any alarm level stays finite


@dataclass(frozen=True)
class Null:
    """The reference as the test sees it: each column's values, sorted (a text
    column by its categories' indicators)."""

    columns: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]]
    sorted: np.ndarray  # reference rows x columns, each column sorted
    spread: np.ndarray  # each column's mean |r| over the reference itself
    low: np.ndarray  # each column's range (from half the reference rows)
    high: np.ndarray
    usual: float  # the other half's mean share of columns out of range

    @classmethod
    def of(cls, reference: pd.DataFrame, categorical: list[str]) -> Null:
        categories = {
            c: tuple(sorted(reference[c].dropna().astype(str).unique()))
            for c in categorical
        }
        columns = tuple(reference.columns)
        raw = _matrix(reference, columns, categories)
        if len(raw) > SAMPLE:
            raw = raw[np.random.default_rng(0).choice(len(raw), SAMPLE, replace=False)]
        ordered = np.sort(raw, axis=0)
        # A column's range from half the rows, the usual share out of range from
        # the other half: what a new row of the reference's distribution shows
        # (the rows that set a range lie inside it more often than new ones).
        low = np.nanquantile(raw[0::2], RANGE, axis=0)
        high = np.nanquantile(raw[0::2], 1 - RANGE, axis=0)
        zero = np.zeros(raw.shape[1])
        draft = cls(columns, categories, ordered, zero, low, high, 0.0)
        usual = float(draft._outside(raw[1::2]).mean()) if len(raw) > 1 else 0.0
        spread = np.abs(draft._ranks(raw)).mean(axis=0)
        return cls(columns, categories, ordered, spread, low, high, usual)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The frame's columns as the reference's (a text column as indicators)."""
        return _matrix(frame, self.columns, self.categories)

    def outside(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Each observation's share of columns outside their range."""
        raw = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        return self._outside(raw)

    def _outside(self, raw: np.ndarray) -> np.ndarray:
        if not raw.shape[1]:
            return np.zeros(len(raw))
        return ((raw < self.low) | (raw > self.high)).mean(axis=1)

    def ranks(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Each observation's two scores per column: where it lies, `r = 2u - 1`
        against the column's reference values (ties count half; a missing value,
        or a column the reference never filled, 0), and how far out, `|r|` less
        its mean over the reference (a spread that changed moves it, where the
        mean `r` may stay 0)."""
        raw = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        r = self._ranks(raw)
        return np.hstack([r, np.abs(r) - self.spread])

    def _ranks(self, raw: np.ndarray) -> np.ndarray:
        out = np.zeros_like(raw)
        for j in range(raw.shape[1]):
            ref = self.sorted[:, j]
            ref = ref[~np.isnan(ref)]
            if not len(ref):
                continue
            below = np.searchsorted(ref, raw[:, j], side="left")
            above = np.searchsorted(ref, raw[:, j], side="right")
            out[:, j] = (below + above) / len(ref) - 1.0
        return np.nan_to_num(np.where(np.isnan(raw), 0.0, out))

    @property
    def width(self) -> int:
        return self.sorted.shape[1]  # columns (each scored twice)

    @property
    def key(self) -> str:
        """What a detector was measuring (another layout starts afresh)."""
        return f"{self.width}:{','.join(self.columns)}"[:500]


def _matrix(
    frame: pd.DataFrame,
    columns: tuple[str, ...],
    categories: Mapping[str, tuple[str, ...]],
) -> np.ndarray:
    if not categories and all(
        pd.api.types.is_numeric_dtype(t) for t in frame[list(columns)].dtypes
    ):
        return frame[list(columns)].to_numpy(np.float64)
    parts = []
    for column in columns:
        values = frame[column]
        if column in categories:
            text = values.astype(str).to_numpy()
            parts += [(text == k).astype(np.float64) for k in categories[column]]
        else:
            parts.append(pd.to_numeric(values, errors="coerce").to_numpy(np.float64))
    return np.column_stack(parts) if parts else np.zeros((len(frame), 0))


def min_delta(min_effect: float, scale: float = 1.0) -> float:
    """Cliff's delta of a column whose mean moved by `min_effect` standard
    deviations of one input, for values of `scale` x less spread (a device's
    batch summary: sqrt(batch)), on a normal curve."""
    return float(erf(min_effect * scale / 2.0))


@dataclass
class Evidence:
    """A target's detector between monitor runs (kept in the trigger's state)."""

    reference: str = ""  # what it tests against; another reference starts afresh
    # The two e-detectors' bets (ranks, then ranges), each at every fraction
    detector: list[float] = field(default_factory=lambda: [0.0] * 2 * len(BETS))
    recent_r: list[float] = field(default_factory=list)  # each score's, weighted
    # the window's bet outcomes, [ranks, ranges] per observation
    recent: list[list[float]] = field(default_factory=list)
    seen: int = 0
    first_at: float | None = None  # arrival of the first observation
    last_at: float | None = None
    cursor: str | None = None  # the newest observation taken (telemetry id, ts)

    @property
    def statistic(self) -> float:
        """The e-detector: the mean of its bets' CUSUMs (a mixture of e-detectors
        is one)."""
        return float(np.mean(self.detector))

    def evalue(self) -> float:
        """The betting wealth over the window's observations (an e-value): the
        mean over the same bets of their products."""
        if not self.recent:
            return 1.0
        y = np.asarray(self.recent, dtype=np.float64).reshape(-1, 2)
        logs = [np.log1p(b * y[:, k]).sum() for k in (0, 1) for b in BETS]
        return float(np.mean(np.exp(np.minimum(logs, 690.0))))

    def per_month(self, default: float) -> float:
        """Observations per month at the measured arrival rate (`default` until
        two arrivals are a second apart)."""
        if self.first_at is None or self.last_at is None:
            return default
        span = self.last_at - self.first_at
        if span < 1.0 or self.seen < 2:
            return default
        return self.seen / span * MONTH_S

    def restart(self) -> None:
        """After a trigger: a new detector (the columns' recent r are kept)."""
        self.detector = [0.0] * 2 * len(BETS)
        self.recent = []


def outcomes(
    evidence: Evidence, ranks: np.ndarray, *, delta: float, share: float
) -> np.ndarray:
    """Each observation's bet outcome `y` (module doc), in order; the columns'
    recent r move on with each."""
    width = ranks.shape[1]
    recent = np.asarray(evidence.recent_r, dtype=np.float64)
    if len(recent) != width:
        recent = np.zeros(width)
    decay = 1.0 - 1.0 / MEMORY
    floor = max(share * width / 2, 1.0)  # drift_share of the columns
    y = np.zeros(len(ranks))
    for i, r in enumerate(ranks):
        # Each score's side, weighted by how far its recent mean (its weights
        # summing to 1 from the first observation on) is past delta.
        taken = evidence.seen + i
        mean = recent / (1.0 - decay**taken) if taken else recent
        excess = np.clip((np.abs(mean) - delta) / (1.0 - delta), 0.0, 1.0)
        w = np.sign(mean) * excess
        sides = excess.sum()
        if sides > 0:
            spread = max(sides, floor * excess.max())
            y[i] = (w @ r - sides * delta) / spread / (1.0 + delta)
        recent = decay * recent + (1.0 - decay) * r
    evidence.recent_r = recent.tolist()
    return y


def ranged(null: Null, observations: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Each observation's bet on its columns out of range (module doc), in
    [-1, ...)."""
    expected = null.usual + OUT_EFFECT
    return (null.outside(observations) - expected) / expected


def observe_outcomes(evidence: Evidence, y: np.ndarray, *, window: int) -> None:
    """The e-detector after bets with outcomes `y` (observations x [ranks,
    ranges]), in order."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, 2)
    detector = np.asarray(evidence.detector, dtype=np.float64)
    if len(detector) != 2 * len(BETS):
        detector = np.zeros(2 * len(BETS))
    bets = np.asarray(BETS * 2)
    for ranks, ranges in y:
        outcome = np.repeat([ranks, ranges], len(BETS))
        detector = np.minimum(np.maximum(detector, 1.0) * (1.0 + bets * outcome), BIG)
    evidence.detector = detector.tolist()
    evidence.recent = [*evidence.recent, *y.tolist()][-window:]
    evidence.seen += len(y)


def observe(
    evidence: Evidence,
    null: Null,
    observations: pd.DataFrame,
    cfg: MonitoringConfig,
    *,
    scale: float = 1.0,
    window: int = 100,
) -> np.ndarray:
    """Bet on each observation in order; the outcomes (observations x [ranks,
    ranges]). `scale`: sqrt(batch) for a device's batch summaries."""
    raw = null.matrix(observations)
    y = outcomes(
        evidence,
        null.ranks(raw),
        delta=min_delta(cfg.min_effect, scale),
        share=cfg.drift_share,
    )
    both = np.column_stack([y, ranged(null, raw)])
    observe_outcomes(evidence, both, window=window)
    return both


def threshold(evidence: Evidence, cfg: MonitoringConfig, default_rate: float) -> float:
    """The e-detector's alarm level: observations per month / the level."""
    return max(evidence.per_month(default_rate), 1.0) / cfg.false_alarm_level


def ebh(evalues: Mapping[str, float], level: float) -> set[str]:
    """e-BH: the largest k with the k-th largest e-value at least m / (k * level);
    the k targets with the largest e-values."""
    ranked = sorted(evalues.items(), key=lambda kv: kv[1], reverse=True)
    m = len(ranked)
    chosen = 0
    for k, (_, e) in enumerate(ranked, start=1):
        if e >= m / (k * level):
            chosen = k
    return {name for name, _ in ranked[:chosen]}


def describe(statistic: float, limit: float) -> str:
    """The detector against its alarm level, in words."""
    side = "past" if statistic >= limit else "below"
    return f"evidence {_short(statistic)}, {side} its level {_short(limit)}"


def _short(x: float) -> str:
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.3g}" if 1e-3 <= x < 1e5 else f"{x:.2e}"
