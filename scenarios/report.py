"""The closed loop's report: each step's time, the drift share before and after,
the champion's accuracy on delayed labels, the versions, and why the new one was
trained (from its MLflow tags)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from stack.contracts import TRIGGER_PREFIX, DriftOutcome, Tag


@dataclass
class LoopReport:
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    cohort: str = ""
    drift_before: float | None = None
    drift_after: float | None = None
    accuracy_before: str | None = None  # old champion on the cohort's delayed labels
    accuracy_after: str | None = None  # new champion on the next batch of labels
    old_version: str | None = None
    new_version: str | None = None
    why: str = ""  # the new version's trigger and gate decision, from its tags
    outcome: str = ""

    def step(self, name: str, started: float, detail: str) -> None:
        self.steps.append((name, time.monotonic() - started, detail))


def why(tags: dict[str, str]) -> str:
    """What started a version's training, what its gates said and why it became
    champion or did not (its tags)."""
    trigger = tags.get(Tag.TRIGGER, "manual")
    if trigger == "drift":
        started = (
            f"drift on {tags.get(TRIGGER_PREFIX + 'target')} (share "
            f"{tags.get(TRIGGER_PREFIX + 'drift_share')}, event "
            f"{tags.get(TRIGGER_PREFIX + 'event_id')}, Evidently snapshot "
            f"{tags.get(TRIGGER_PREFIX + 'snapshot_id')})"
        )
    else:
        started = trigger
    gate = tags.get(Tag.GATE, "not gated")
    if gate != "passed" and tags.get(Tag.GATE_FAILURES):
        gate += f": {tags[Tag.GATE_FAILURES]}"
    promotion = f"; {tags[Tag.PROMOTION]}" if Tag.PROMOTION in tags else ""
    return f"trained for {started}; gates {gate}{promotion}"


def accuracy_line(outcome: DriftOutcome, version: str | None) -> str | None:
    if outcome.accuracy_delayed is None:
        return None
    return (
        f"v{version} {outcome.accuracy_delayed:.3f} on "
        f"{outcome.delayed_label_rows} delayed labels"
    )


def fmt_share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
