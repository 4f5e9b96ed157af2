"""Telemetry that does not grow without bound.

Raw check-in reports are kept `fleet.telemetry_retention_s` (what rollouts judge and
drift checks read: the recent ones). Older reports are rolled up into one row per
device, version and window of `fleet.telemetry_window_s` (`TelemetryWindow`: counts
summed, confidence weighted by inferences, per-feature mean and standard deviation
pooled over every inference, lowest minimum, highest maximum), and windows older than
`fleet.telemetry_window_retention_days` are deleted. So a device costs at most its
retention's worth of raw reports plus one row per window, whatever its poll.

The server runs `roll_up` from its maintenance tick, a bounded batch of rows at a
time, each batch in one transaction (a crash leaves the reports or their summary,
never both, never neither).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from components.config import FleetConfig
from edge_fleet.db import Telemetry, TelemetryWindow, aware, now

BATCH = 5000  # raw reports rolled up per call


@dataclass
class Part:
    """What a window or one report contributes: counts, and per-feature moments
    weighted by its inferences."""

    reports: int
    inferences: int
    errors: int
    latency_sum: float  # of the reports' medians (mean = latency_sum / reports)
    latency_p95: float
    confidence_sum: float  # confidence x inferences
    class_counts: dict[str, int]
    mean: list[float]
    square: list[float]  # mean of x^2 per feature
    low: list[float]
    high: list[float]
    # A table model's gap and category shares (edge_fleet/device/inference.py),
    # weighted by inferences; None once a part without them is merged in.
    missing: list[float] | None = None
    shares: dict[str, list[float]] | None = None
    # "mfcc": the features are a keyword spotter's clip summaries (one version's
    # reports all have them or none).
    summary: str | None = None

    @classmethod
    def of_report(cls, t: Telemetry) -> Part:
        return cls.of_summary(
            t, reports=1, latency_sum=t.latency_ms_median, counts=t.class_counts
        )

    @classmethod
    def of_window(cls, w: TelemetryWindow) -> Part:
        return cls.of_summary(
            w,
            reports=w.reports,
            latency_sum=w.latency_ms_median * w.reports,
            counts=w.class_counts,
        )

    @classmethod
    def of_summary(
        cls,
        row: Telemetry | TelemetryWindow,
        *,
        reports: int,
        latency_sum: float,
        counts: dict,
    ) -> Part:
        """A report or a window: both carry the same fields (a window's latency
        median is the mean of its reports')."""
        stats = row.feature_stats
        return cls(
            reports,
            row.inferences,
            row.errors,
            latency_sum,
            row.latency_ms_p95,
            row.confidence_mean * row.inferences,
            {k: int(v) for k, v in counts.items()},
            list(stats["mean"]),
            [s * s + m * m for m, s in zip(stats["mean"], stats["std"], strict=True)],
            list(stats["min"]),
            list(stats["max"]),
            stats.get("missing"),
            stats.get("shares"),
            stats.get("summary"),
        )

    def merge(self, other: Part) -> Part:
        n = self.inferences + other.inferences
        a, b = self.inferences / n, other.inferences / n
        counts = dict(self.class_counts)
        for label, c in other.class_counts.items():
            counts[label] = counts.get(label, 0) + c
        return Part(
            self.reports + other.reports,
            n,
            self.errors + other.errors,
            self.latency_sum + other.latency_sum,
            max(self.latency_p95, other.latency_p95),
            self.confidence_sum + other.confidence_sum,
            counts,
            [a * x + b * y for x, y in zip(self.mean, other.mean, strict=True)],
            [a * x + b * y for x, y in zip(self.square, other.square, strict=True)],
            [min(x, y) for x, y in zip(self.low, other.low, strict=True)],
            [max(x, y) for x, y in zip(self.high, other.high, strict=True)],
            _weighted(self.missing, other.missing, a, b),
            (
                {
                    k: _weighted(v, other.shares[k], a, b)
                    for k, v in self.shares.items()
                    if k in other.shares
                }
                if self.shares is not None and other.shares is not None
                else None
            ),
            self.summary if self.summary == other.summary else None,
        )

    def write(self, window: TelemetryWindow) -> None:
        window.reports, window.inferences = self.reports, self.inferences
        window.errors = self.errors
        window.latency_ms_median = self.latency_sum / self.reports
        window.latency_ms_p95 = self.latency_p95
        window.confidence_mean = self.confidence_sum / self.inferences
        window.class_counts = self.class_counts
        window.feature_stats = (
            {
                "mean": [round(m, 6) for m in self.mean],
                "std": [
                    round(math.sqrt(max(q - m * m, 0.0)), 6)
                    for m, q in zip(self.mean, self.square, strict=True)
                ],
                "min": self.low,
                "max": self.high,
            }
            | (
                {"missing": self.missing, "shares": self.shares}
                if self.missing is not None and self.shares is not None
                else {}
            )
            | ({"summary": self.summary} if self.summary else {})
        )


def _weighted(
    x: list[float] | None, y: list[float] | None, a: float, b: float
) -> list[float] | None:
    if x is None or y is None or len(x) != len(y):
        return None
    return [round(a * u + b * v, 6) for u, v in zip(x, y, strict=True)]


def window_start(when: datetime, window_s: int) -> datetime:
    seconds = int(aware(when).timestamp()) // window_s * window_s
    return datetime.fromtimestamp(seconds, UTC)


def roll_up(session: Session, cfg: FleetConfig, at: datetime | None = None) -> int:
    """Summarise up to BATCH reports past retention into their windows, delete
    them and the windows past theirs; returns how many reports were rolled up."""
    at = at or now()
    cutoff = at - timedelta(seconds=cfg.telemetry_retention_s)
    rows = list(
        session.scalars(
            select(Telemetry)
            .where(Telemetry.received_at < cutoff)
            .order_by(Telemetry.id)
            .limit(BATCH)
        )
    )
    groups: dict[tuple[str, str, datetime], list[Telemetry]] = {}
    for row in rows:
        key = (
            row.device_id,
            row.version,
            window_start(row.received_at, cfg.telemetry_window_s),
        )
        groups.setdefault(key, []).append(row)
    for (device_id, version, start), reports in groups.items():
        _add(session, device_id, version, start, reports)
    if rows:
        session.execute(delete(Telemetry).where(Telemetry.id.in_([r.id for r in rows])))
    kept_after = at - timedelta(days=cfg.telemetry_window_retention_days)
    session.execute(
        delete(TelemetryWindow).where(TelemetryWindow.window_start < kept_after)
    )
    session.commit()
    return len(rows)


def _add(
    session: Session,
    device_id: str,
    version: str,
    start: datetime,
    reports: list[Telemetry],
) -> None:
    window = session.scalar(
        select(TelemetryWindow).where(
            TelemetryWindow.device_id == device_id,
            TelemetryWindow.version == version,
            TelemetryWindow.window_start == start,
        )
    )
    parts = [Part.of_report(r) for r in reports]
    if window is None:
        window = TelemetryWindow(
            device_id=device_id,
            cohort=reports[0].cohort,
            version=version,
            window_start=start,
        )
        session.add(window)
    else:
        parts.insert(0, Part.of_window(window))
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    total.write(window)
