"""The registry's evaluation gates as a pure decision over a candidate's measurements
and the current champion's."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.config import GatesConfig
from components.evaluation.paired import PairedDrop

# Where each gate is set: a refusal names the key to change.
KEY = "registry.gates."


@dataclass(frozen=True)
class Candidate:
    version: str
    test_accuracy: float
    ship_bytes: float
    ship_latency_ms: float
    ship_accepted: bool


@dataclass(frozen=True)
class GateDecision:
    version: str
    failures: list[str] = field(default_factory=list)
    beats_champion: bool = False

    @property
    def passed(self) -> bool:
        return not self.failures


def decide(
    candidate: Candidate,
    champion: Candidate | None,
    cfg: GatesConfig,
    paired: PairedDrop | None = None,
) -> GateDecision:
    """`paired`: the candidate and the champion answering the same test rows; with
    it, a drop over `max_drop_vs_champion` refuses only when it is also beyond
    chance (`drop_test_alpha`): on a small test set one row is not a verdict."""
    failures = []
    if candidate.test_accuracy < cfg.min_test_accuracy:
        failures.append(
            f"{KEY}min_test_accuracy: {candidate.test_accuracy:.4f} < "
            f"{cfg.min_test_accuracy}"
        )
    if champion is not None and paired is not None:
        if paired.refused(cfg.max_drop_vs_champion, cfg.drop_test_alpha):
            failures.append(
                f"{KEY}max_drop_vs_champion: {paired.drop * 100:.2f} points below "
                f"champion v{champion.version} > {cfg.max_drop_vs_champion * 100:.2f}"
                f", beyond chance ({paired.worse} of {paired.worse + paired.better} "
                f"differing test rows against it, exact McNemar p = "
                f"{paired.p_value:.3g} < {cfg.drop_test_alpha})"
            )
    elif champion is not None:
        drop = champion.test_accuracy - candidate.test_accuracy
        if drop > cfg.max_drop_vs_champion + 1e-12:
            failures.append(
                f"{KEY}max_drop_vs_champion: {drop * 100:.2f} points below champion "
                f"v{champion.version} > {cfg.max_drop_vs_champion * 100:.2f}"
            )
    if cfg.max_ship_kb and candidate.ship_bytes / 1024 > cfg.max_ship_kb:
        failures.append(
            f"{KEY}max_ship_kb: {candidate.ship_bytes / 1024:.1f} > {cfg.max_ship_kb}"
        )
    if cfg.max_ship_latency_ms and candidate.ship_latency_ms > cfg.max_ship_latency_ms:
        failures.append(
            f"{KEY}max_ship_latency_ms: {candidate.ship_latency_ms:.4f} > "
            f"{cfg.max_ship_latency_ms}"
        )
    if cfg.require_ship_accepted and not candidate.ship_accepted:
        failures.append(
            f"{KEY}require_ship_accepted: the shipped variant failed "
            "optimize.max_accuracy_drop"
        )
    beats = champion is None or candidate.test_accuracy >= champion.test_accuracy
    return GateDecision(candidate.version, failures, beats)
