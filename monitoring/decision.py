"""A monitor pass's decision, target by target and across targets.

A `Window` is one target's reference and current rows (serving's prediction log,
or a cohort's device reports) with what its check needs. `check` gives the
window's verdicts (`drift.check` without Evidently's report) and its e-detector
after the observations that arrived since the last pass (`sequential`); `judge`
flags the targets past their alarm level that e-BH keeps at
`monitoring.false_alarm_level` (a cohort only with `monitoring.min_devices`
devices whose own reports drift), asks `trigger.decide` whether each one
retrains, and says which get a dashboard snapshot. The flow (`flows/monitor.py`)
fetches the windows, runs the checks on its task runner and stores what this
module decided."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from evidently.core.report import Snapshot

from components.config import MonitoringConfig, Params
from components.data.features import ColumnEncoding
from monitoring import drift, sequential, trigger

DEFAULT_PER_MONTH = 1e6  # observations a month, until two arrivals are measured


@dataclass(frozen=True)
class Window:
    target: str
    reference: pd.DataFrame
    current: pd.DataFrame
    threshold_scale: float
    min_rows: int
    reference_from: str  # "training split" or the target's own labelled rows
    by_device: bool = False  # a cohort's reports, each device one vote
    size: int = 100  # the window's configured rows (the e-value's observations)
    version: str = "-"  # the champion the reference belongs to
    # The reference as the sequential test sees it; cohorts on the same reference
    # share one (`device_window`); None: built at the check.
    null: sequential.Null | None = None

    @property
    def categorical(self) -> list[str]:
        return drift.categorical_columns(self.reference, self.current)

    def null_model(self) -> sequential.Null:
        return self.null or sequential.Null.of(self.reference, self.categorical)

    def verdicts(
        self, cfg: MonitoringConfig, *, snapshot: bool = False
    ) -> drift.DriftResult:
        """The window's drift verdicts (`drift.check`); with `snapshot`, also
        Evidently's report (seconds; the verdicts are the same)."""
        return drift.check(
            self.target,
            self.reference,
            self.current,
            cfg,
            threshold_scale=self.threshold_scale,
            min_rows=self.min_rows,
            by_device=self.by_device,
            snapshot=snapshot,
        )

    def snapshot(self, cfg: MonitoringConfig) -> Snapshot:
        """The window's Evidently report for its dashboard."""
        return drift.evidently_snapshot(
            self.target,
            self.reference,
            self.current,
            self.categorical,
            cfg,
            threshold_scale=self.threshold_scale,
            metadata={"version": self.version},
        )

    def arrivals(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's place in the order of arrival (a report's id; a logged
        row's time) and its arrival time (NaN unknown)."""
        index = self.current.index
        if self.by_device:
            return (
                index.get_level_values(drift.REPORT).to_numpy(np.float64),
                index.get_level_values(drift.ARRIVED).to_numpy(np.float64),
            )
        order = index.to_numpy(np.float64)
        arrived = order if index.name == drift.ARRIVED else np.full(len(order), np.nan)
        return order, arrived


@dataclass
class Shared:
    """What the cohorts on the same reference rows share in one pass: the rows'
    batch summaries and the sequential test's view of them, each built once."""

    prepared: dict[str, drift.DeviceReference] = field(default_factory=dict)
    nulls: dict[tuple, sequential.Null] = field(default_factory=dict)


def device_window(
    target: str,
    rows: pd.DataFrame,
    reports: Sequence[dict],
    params: Params,
    *,
    source: str,
    shared: Shared,
    encoding: Sequence[ColumnEncoding] = (),
    version: str = "-",
) -> Window:
    """A cohort's window: its devices' reports against the batch summaries of
    `rows` (the reference `source` names; built once per `shared`)."""
    cfg, batch = params.monitoring, params.fleet.telemetry_batch
    summaries = {
        "batch": batch,
        "reference_batches": cfg.reference_batches,
        "label_column": params.data.label_column,
        "encoding": tuple(encoding),
    }
    if source not in shared.prepared:
        shared.prepared[source] = drift.device_reference(rows, **summaries)
    reference, current = drift.device_frames(
        rows, reports, prepared=shared.prepared[source], **summaries
    )
    key = (source, tuple(current.columns))
    if key not in shared.nulls:
        shared.nulls[key] = sequential.Null.of(
            reference, drift.categorical_columns(reference, current)
        )
    return Window(
        target,
        reference,
        current,
        math.sqrt(batch),
        cfg.device_min_reports,
        source,
        by_device=True,
        size=cfg.device_window_reports,
        version=version,
        null=shared.nulls[key],
    )


@dataclass(frozen=True)
class Checked:
    """One target's check: the window's verdicts (no snapshot yet) and its
    sequential test after this pass's new observations."""

    result: drift.DriftResult
    evidence: sequential.Evidence
    new: int  # observations taken at this pass
    statistic: float  # the e-detector
    needed: float  # its alarm level
    evalue: float  # the window's betting wealth (for e-BH across targets)
    seconds: float

    @property
    def alarm(self) -> bool:
        return self.result.judged and self.statistic >= self.needed


def check(
    window: Window, cfg: MonitoringConfig, evidence: sequential.Evidence
) -> Checked:
    """One target's verdicts (milliseconds) and its sequential test, on the
    observations that arrived since the last pass (each taken once, in order).
    `evidence` is left as it was (the result carries the new one)."""
    t0 = time.perf_counter()
    result = window.verdicts(cfg)
    null = window.null_model()
    key = f"v{window.version} {window.reference_from} {null.key}"
    evidence = copy.deepcopy(evidence)
    if evidence.reference != key:  # a new champion, reference or layout
        evidence = sequential.Evidence(reference=key)
    order, arrived = window.arrivals()
    after = -np.inf if evidence.cursor is None else float(evidence.cursor)
    new = np.flatnonzero(order > after)
    new = new[np.argsort(order[new], kind="stable")]
    if len(new):
        sequential.observe(
            evidence,
            null,
            window.current.iloc[new],
            cfg,
            scale=window.threshold_scale,
            window=window.size,
        )
        evidence.cursor = repr(float(order[new[-1]]))
        times = arrived[new][np.isfinite(arrived[new])]
        if len(times):
            evidence.first_at = evidence.first_at or float(times.min())
            evidence.last_at = float(times.max())
    return Checked(
        result,
        evidence,
        len(new),
        evidence.statistic,
        sequential.threshold(evidence, cfg, DEFAULT_PER_MONTH),
        evidence.evalue(),
        time.perf_counter() - t0,
    )


@dataclass
class Judged:
    """One target's decision at this pass, before anything is stored."""

    check: Checked
    summary: dict
    decision: trigger.Decision
    status: str
    snapshot_due: bool


def judge(
    windows: list[Window],
    checks: list[Checked],
    states: dict[str, trigger.TargetState],
    cfg: MonitoringConfig,
    now: float,
) -> list[Judged]:
    """The targets flagged at this pass (each past its e-detector's alarm level,
    and together an e-BH set at `monitoring.false_alarm_level`; a cohort only with
    `monitoring.min_devices` devices whose own reports drift), each one's
    trigger decision, and which get a dashboard snapshot (a new status, a
    trigger, or `monitoring.snapshot_interval_s` since the last). `states` gets
    each target's new detector and snapshot record."""
    evalues = {
        w.target: (c.evalue if c.alarm else 0.0)
        for w, c in zip(windows, checks, strict=True)
        if c.result.judged
    }
    chosen = sequential.ebh(evalues, cfg.false_alarm_level)
    out = []
    for window, checked in zip(windows, checks, strict=True):
        state = states.setdefault(window.target, trigger.TargetState())
        state.evidence = checked.evidence
        result = checked.result
        flagged, why = verdict(window, checked, chosen, len(evalues), cfg)
        summary = result.summary() | {
            "judged": result.judged,
            "flagged": flagged,
            "why": why,
            "reference": window.reference_from,
            "evidence": checked.statistic,
            "evidence_needed": checked.needed,
            "new_observations": checked.new,
            "check_s": round(checked.seconds, 4),
        }
        decision = trigger.decide(state, summary, cfg, now)
        shown = status(checked, flagged)
        due = result.judged and (
            decision.trigger
            or shown != state.snapshot_status
            or state.snapshot_at is None
            or now - state.snapshot_at >= cfg.snapshot_interval_s
        )
        if due:
            state.snapshot_at, state.snapshot_status = now, shown
        out.append(Judged(checked, summary, decision, shown, due))
    return out


def status(checked: Checked, flagged: bool) -> str:
    """What a target's dashboard shows: flagged, alarm (past its level, not
    flagged), drifted window (the window's verdict only), quiet or not judged."""
    if flagged:
        return "flagged"
    if checked.alarm:
        return "alarm"
    if checked.result.drifted:
        return "drifted window"
    return "quiet" if checked.result.judged else "not judged"


def verdict(
    window: Window,
    checked: Checked,
    chosen: set[str],
    judged: int,
    cfg: MonitoringConfig,
) -> tuple[bool, str]:
    """Whether the target is flagged at this pass, and why, in words."""
    evidence = sequential.describe(checked.statistic, checked.needed)
    if not checked.alarm:
        return False, f"no drift: {evidence}"
    if window.target not in chosen:
        return False, (
            f"{evidence}, but not among the targets flagged at a false "
            f"discovery rate of {cfg.false_alarm_level} ({judged} judged)"
        )
    result = checked.result
    if window.by_device and (result.devices_drifted or 0) < cfg.min_devices:
        return False, (
            f"{evidence}, but {result.devices_drifted} of {result.devices} "
            f"devices' own reports drift (at least {cfg.min_devices} must)"
        )
    return True, (
        f"drift: {evidence} (at most {cfg.false_alarm_level} false alarms "
        f"a month), flagged among {judged} targets"
    )
