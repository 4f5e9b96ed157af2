"""Differential privacy bookkeeping: Opacus' accountant for what a run spends, and the
privacy ledger that sums the epsilon spent on each data version across runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from components.errors import PrivacyBudgetError


@dataclass(frozen=True)
class PrivacySpent:
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    mechanism: str

    def as_metrics(self) -> dict[str, float]:
        return {
            "privacy_epsilon": self.epsilon,
            "privacy_delta": self.delta,
            "privacy_noise_multiplier": self.noise_multiplier,
        }


def spent(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    mechanism: str,
) -> PrivacySpent:
    """Epsilon of `steps` subsampled Gaussian steps, by Opacus' RDP accountant."""
    from opacus.accountants import RDPAccountant  # Opacus: private modes only

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    epsilon = accountant.get_epsilon(delta) if steps > 0 else 0.0
    return PrivacySpent(
        float(epsilon), delta, noise_multiplier, sample_rate, steps, mechanism
    )


def noise_for(
    target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> float:
    """The noise multiplier that spends `target_epsilon` over `steps` steps."""
    from opacus.accountants.utils import get_noise_multiplier  # private modes only

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    )


@dataclass(frozen=True)
class LedgerEntry:
    data_version: str
    epsilon: float
    delta: float
    mechanism: str
    mode: str
    recorded_at: str


class PrivacyLedger:
    """An append-only JSON file of the epsilon spent per data version."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        return [LedgerEntry(**e) for e in json.loads(self.path.read_text())]

    def total(self, data_version: str) -> float:
        return sum(e.epsilon for e in self.entries() if e.data_version == data_version)

    def check(self, data_version: str, planned: float, max_total: float) -> None:
        """Refuse, before training, a run that would exceed the total budget."""
        used = self.total(data_version)
        if used + planned > max_total + 1e-9:
            raise PrivacyBudgetError(
                f"privacy budget exhausted for data version {data_version[:12]}: "
                f"{used:.2f} of train.privacy.max_total_epsilon={max_total} already "
                f"spent, this run would add {planned:.2f}",
                hint=f"new data (a new version) resets it; the ledger is {self.path}",
            )

    def record(self, data_version: str, spent_: PrivacySpent, mode: str) -> None:
        entries = self.entries() + [
            LedgerEntry(
                data_version=data_version,
                epsilon=spent_.epsilon,
                delta=spent_.delta,
                mechanism=spent_.mechanism,
                mode=mode,
                recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps([asdict(e) for e in entries], indent=1) + "\n")
