"""When drift starts retraining: a target flagged by the sequential test
(monitoring/sequential.py: its e-detector past its alarm level, and in the e-BH
set of the targets checked at the same pass), a window big enough to judge, and
`monitoring.cooldown_s` since the target's last trigger (so one drifting cohort
starts one retraining, not a storm). State per target (its detector, the last
checks, the last snapshot's status) is kept in a JSON file between monitor runs."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from components.config import MonitoringConfig
from monitoring.sequential import Evidence

# What a target's history keeps of each check (the dashboards keep the rest).
HISTORY = ("rows", "drift_share", "drifted", "flagged", "evidence", "evidence_needed")


@dataclass
class TargetState:
    last_trigger: float | None = None
    triggers: int = 0
    history: list[dict] = field(default_factory=list)  # the last checks, newest last
    evidence: Evidence = field(default_factory=Evidence)
    # The dashboard: when the last snapshot was stored, and the status it showed
    snapshot_at: float | None = None
    snapshot_status: str | None = None


@dataclass(frozen=True)
class Decision:
    trigger: bool
    reason: str


def decide(
    state: TargetState, check: dict, cfg: MonitoringConfig, now: float
) -> Decision:
    """Update the target's state with one check (a `DriftResult.summary()` plus
    `judged`, `flagged` and the sequential test's `why`); say whether to retrain
    now. A trigger restarts the target's detector."""
    if not check["judged"]:
        return Decision(False, f"window of {check['rows']} too small for a verdict")
    kept = {k: check[k] for k in HISTORY if k in check}  # a few numbers per check:
    state.history = [*state.history[-49:], {"at": now} | kept]  # 1,000 cohorts
    if not check["flagged"]:
        return Decision(False, check["why"])
    if state.last_trigger is not None and now - state.last_trigger < cfg.cooldown_s:
        left = cfg.cooldown_s - (now - state.last_trigger)
        return Decision(False, f"{check['why']}; cooling down ({left:.0f} s left)")
    state.last_trigger, state.triggers = now, state.triggers + 1
    state.evidence.restart()
    return Decision(True, check["why"])


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, TargetState]:
        """The targets' states; a state kept by an older monitor (hysteresis
        streaks) keeps its triggers and history and starts a new detector."""
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        known = {f.name for f in fields(TargetState)}
        evidence = {f.name for f in fields(Evidence)}
        states = {}
        for target, saved in raw.items():
            kept = {k: v for k, v in saved.items() if k in known}
            found = kept.pop("evidence", None) or {}
            kept["evidence"] = Evidence(
                **{k: v for k, v in found.items() if k in evidence}
            )
            states[target] = TargetState(**kept)
        return states

    def save(self, states: dict[str, TargetState]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in states.items()}))
        os.replace(tmp, self.path)


def now() -> float:
    return time.time()
