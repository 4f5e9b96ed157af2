"""What a device runs: its model files loaded in their runtime (ONNX Runtime or
LiteRT), kept by the file's hash, and one batch's logits summarised for telemetry."""

from __future__ import annotations

import statistics
import threading
from pathlib import Path

import numpy as np

from edge_fleet.device.micro import Board, MicroModel
from edge_fleet.device.runtime import LiteRtModel, OnnxRuntimeModel, load_runtime

Runtime = OnnxRuntimeModel | LiteRtModel | MicroModel


class RuntimeCache:
    """Loaded runtimes by the file's sha256. One per device; a simulator shares one
    among its devices so a thousand fit in one process. A failed load is never
    cached, so every device still finds a broken file broken. `board`: what these
    devices have for a TFLM file (its arena and flash; None: room to measure)."""

    def __init__(self, board: Board | None = None) -> None:
        self.board = board
        self._loaded: dict[str, Runtime] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, sha: str) -> Runtime:
        with self._lock:
            cached = self._loaded.get(sha)
        if cached is not None:
            return cached
        arena = self.board.arena_bytes if self.board is not None else None
        runtime = load_runtime(path, arena_size=arena)
        with self._lock:
            self._loaded[sha] = runtime
        return runtime


def predictions(logits: np.ndarray, classes: list[str] | None = None) -> dict:
    """Inferences, errors (non-finite rows), mean confidence and predicted class
    counts of one batch's logits, by label where the file names its classes
    (`Adelie`), else by output position."""
    logits = logits.astype(np.float64)
    bad = ~np.isfinite(logits).all(axis=1)
    logits = logits[~bad]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels, counts = np.unique(probs.argmax(axis=1), return_counts=True)
    return {
        "inferences": len(bad),
        "errors": int(bad.sum()),
        "confidence_mean": float(probs.max(axis=1).mean()) if len(probs) else 0.0,
        "class_counts": {
            str(classes[k] if classes else k): int(v)
            for k, v in zip(labels, counts, strict=True)
        },
    }


def feature_stats(
    x: np.ndarray, inputs: list[dict] | None = None
) -> dict[str, list[float] | dict[str, list[float]]]:
    """Per input column over the present values: a gap (NaN, which the model
    fills) is left out; a column with no value in the whole batch reports 0.
    In float64: a float32 row of 1e30 squared to inf in float32, and one such row
    made every check-in fail ("Out of range float values are not JSON compliant").
    With a table model's `inputs` (their kinds): each column's share of gaps
    (`missing`), and each categorical column's share of each category among its
    present values (`shares`, by column position): the mean of a category's
    index says nothing of which category moved."""
    filled = np.where(np.isnan(x).all(axis=0), 0.0, x).astype(np.float64)
    stats: dict = {
        name: rounded(f(filled, axis=0))
        for name, f in (
            ("mean", np.nanmean),
            ("std", np.nanstd),
            ("min", np.nanmin),
            ("max", np.nanmax),
        )
    }
    if inputs is not None and len(inputs) == x.shape[1]:
        stats["missing"] = rounded(np.isnan(x).mean(axis=0))
        stats["shares"] = {
            str(j): category_shares(x[:, j], int(column["categories"]))
            for j, column in enumerate(inputs)
            if column.get("kind") == "categorical"
        }
    return stats


def category_shares(values: np.ndarray, categories: int) -> list[float]:
    """Each category's share of the present values (all 0 where none is)."""
    present = values[~np.isnan(values)].astype(np.int64)
    present = present[(present >= 0) & (present < categories)]
    counts = np.bincount(present, minlength=categories)[:categories]
    return rounded(counts / max(len(present), 1))


def rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def p95(values: list[float]) -> float:
    """numpy's default (linear) 95th percentile."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]
