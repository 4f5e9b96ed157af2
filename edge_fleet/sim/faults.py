"""What can go wrong on a simulated device: a download's connection cut once midway
(resumed with a range request), power lost during a download, hardware on which
every install fails its smoke test."""

from __future__ import annotations

import random
from dataclasses import dataclass


class PowerLoss(BaseException):
    """The simulated device lost power: nothing after this point runs."""


@dataclass
class Faults:
    """The device's `Interference` (edge_fleet.device.agent)."""

    cut_download: float = 0.0  # chance a download is cut once, midway
    power_loss: bool = False  # the device dies during its next model download
    broken_hardware: bool = False  # every install fails its smoke test

    def cut_at(self, url: str, rng: random.Random) -> int | None:
        chance = 1.0 if self.power_loss else self.cut_download
        if chance and "/tuf/targets/" in url and rng.random() < chance:
            return rng.randint(1, 1024)
        return None

    def on_cut(self, url: str) -> None:
        if self.power_loss:
            raise PowerLoss(url)

    def smoke_test_fault(self) -> str | None:
        return "smoke test: device fault (simulated)" if self.broken_hardware else None
