"""The registry gates decide on measurements, naming each failed gate."""

from __future__ import annotations

from components.config import GatesConfig
from components.evaluation.gates import Candidate, decide

GATES = GatesConfig(
    min_test_accuracy=0.95,
    max_drop_vs_champion=0.01,
    max_ship_kb=100,
    max_ship_latency_ms=1.0,
)


def _cand(
    version: str, acc: float, kb: float = 50, ms: float = 0.1, ok: bool = True
) -> Candidate:
    return Candidate(version, acc, kb * 1024, ms, ok)


def test_first_good_version_passes_and_beats_no_champion():
    decision = decide(_cand("1", 0.97), None, GATES)
    assert decision.passed and decision.beats_champion


def test_each_gate_names_what_failed():
    decision = decide(
        _cand("2", 0.93, kb=300, ms=2.0, ok=False), _cand("1", 0.97), GATES
    )
    assert not decision.passed and not decision.beats_champion
    text = "; ".join(decision.failures)
    for gate in (
        "registry.gates.min_test_accuracy: 0.9300 < 0.95",
        "registry.gates.max_drop_vs_champion: 4.00 points below champion v1 > 1.00",
        "registry.gates.max_ship_kb: 300.0 > 100",
        "registry.gates.max_ship_latency_ms: 2.0000 > 1.0",
        "require_ship_accepted",
    ):
        assert gate in text


def test_a_small_drop_passes_but_does_not_beat_the_champion():
    decision = decide(_cand("3", 0.965), _cand("1", 0.97), GATES)
    assert decision.passed and not decision.beats_champion
