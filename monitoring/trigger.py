"""When drift starts retraining: a window must be big enough, drift must persist for
`monitoring.consecutive` windows in a row (hysteresis), and after a trigger the same
target waits `monitoring.cooldown_s` (so one drifting cohort starts one retraining,
not a storm). State per target is kept in a JSON file between monitor runs."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.config import MonitoringConfig


@dataclass
class TargetState:
    streak: int = 0  # drifting windows in a row
    last_trigger: float | None = None
    triggers: int = 0
    history: list[dict] = field(default_factory=list)  # the last checks, newest last


@dataclass(frozen=True)
class Decision:
    trigger: bool
    reason: str
    streak: int


def decide(
    state: TargetState, check: dict, cfg: MonitoringConfig, now: float
) -> Decision:
    """Update the target's state with one check (a `DriftResult.summary()` plus
    `judged`); say whether to retrain now."""
    if not check["judged"]:
        return Decision(
            False, f"window of {check['rows']} too small for a verdict", state.streak
        )
    state.streak = state.streak + 1 if check["drifted"] else 0
    state.history = [*state.history[-49:], {"at": now} | check]
    if not check["drifted"]:
        return Decision(False, "no drift", 0)
    if state.streak < cfg.consecutive:
        return Decision(
            False,
            f"drift {state.streak}/{cfg.consecutive} windows in a row",
            state.streak,
        )
    if state.last_trigger is not None and now - state.last_trigger < cfg.cooldown_s:
        left = cfg.cooldown_s - (now - state.last_trigger)
        return Decision(False, f"cooling down ({left:.0f} s left)", state.streak)
    state.last_trigger, state.triggers = now, state.triggers + 1
    state.streak = 0  # the next trigger needs a fresh run of drifting windows
    return Decision(True, "drift persisted", cfg.consecutive)


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, TargetState]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {k: TargetState(**v) for k, v in raw.items()}

    def save(self, states: dict[str, TargetState]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in states.items()}))
        os.replace(tmp, self.path)


def now() -> float:
    return time.time()
