"""The registry gates decide on measurements, naming each failed gate."""

from __future__ import annotations

import numpy as np

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


def test_a_drop_against_the_champion_is_judged_on_the_same_rows():
    """On a 61-row test split, one row the champion gets right and the candidate
    wrong is 1.6 points, over the 1-point budget: the point difference refused it.
    Judged paired, one row is not evidence; five of five is."""
    from components.evaluation.paired import PairedDrop

    truth = np.array(["a"] * 61, dtype=object)
    champion = truth.copy()
    one_off = truth.copy()
    one_off[0] = "b"
    candidate, best = _cand("2", 60 / 61), _cand("1", 1.0)
    assert not decide(candidate, best, GATES).passed  # the point difference
    paired = PairedDrop.of(champion, one_off, truth)
    assert decide(candidate, best, GATES, paired).passed
    five_off = truth.copy()
    five_off[:5] = "b"
    refused = decide(
        _cand("2", 56 / 61), best, GATES, PairedDrop.of(champion, five_off, truth)
    )
    assert [f for f in refused.failures if "max_drop_vs_champion" in f] == [
        "registry.gates.max_drop_vs_champion: 8.20 points below champion v1 > 1.00, "
        "beyond chance (5 of 5 differing test rows against it, exact McNemar "
        "p = 0.0312 < 0.05)"
    ]
