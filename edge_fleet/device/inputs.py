"""The rows a device runs inference on: drawn at random from the rows it holds
(on a real device, its sensor's recent readings; here a labelled file's rows)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RecordedInputs:
    x: np.ndarray
    seed: int
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def batch(self, n: int) -> np.ndarray:
        return self.x[self.rng.integers(0, len(self.x), n)].astype(np.float32)
