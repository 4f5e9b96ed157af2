"""Simulated inputs: a device's rows with a cohort's drift (brightness, noise,
rotation), and the labelled rows a labelling team would return for a drifted
cohort."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from edge_fleet.device.inputs import RecordedInputs


@dataclass
class DataStream(RecordedInputs):
    """A simulated device's inputs: rows drawn from a labelled set, optionally
    shifted (the drift a cohort can be given), within what the sensor can report
    (`value_range`, the data contract's feature range, when given)."""

    drift: str | None = None
    strength: float = 0.0
    value_range: tuple[float, float] | None = None

    def batch(self, n: int) -> np.ndarray:
        rows = super().batch(n)
        rows = shift(rows, self.drift, self.strength, self.rng)
        if self.value_range is not None:
            rows = np.clip(rows, *self.value_range)
        return rows


def shift(
    rows: np.ndarray, kind: str | None, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Brightness (add), noise (gaussian) or rotation (of square images)."""
    if kind is None or strength == 0:
        return rows
    if kind == "brightness":
        return rows + strength
    if kind == "noise":
        return rows + rng.normal(0, strength, rows.shape).astype(np.float32)
    if kind == "rotation":
        side = math.isqrt(rows.shape[1])
        turns = max(1, round(strength)) % 4
        return np.rot90(rows.reshape(-1, side, side), turns, axes=(1, 2)).reshape(
            len(rows), -1
        )
    raise ValueError(f"drift {kind!r}: expected brightness, noise or rotation")


def labelled_rows(
    train: pd.DataFrame,
    *,
    drift: str,
    strength: float,
    rows: int,
    value_range: tuple[float, float] | None,
    label_column: str,
    seed: int = 7,
) -> pd.DataFrame:
    """A simulated labelling team's answer to a drifting cohort: training rows with
    the cohort's shift applied, their true labels, clipped to what a sensor can
    report (the data contract's range)."""
    picked = train.sample(min(rows, len(train)), random_state=seed)
    features = [c for c in train.columns if c != label_column]
    shifted = shift(
        picked[features].to_numpy(np.float32),
        drift,
        strength,
        np.random.default_rng(seed),
    )
    low, high = value_range or (None, None)
    frame = pd.DataFrame(shifted.astype(np.float64), columns=features).clip(
        lower=low, upper=high
    )
    frame[label_column] = picked[label_column].to_numpy()
    return frame
