"""What a device runs: its model files loaded in their runtime (ONNX Runtime or
LiteRT), kept by the file's hash, and one batch's logits summarised for telemetry."""

from __future__ import annotations

import statistics
import threading
from pathlib import Path

import numpy as np

from edge_fleet.device.runtime import LiteRtModel, OnnxRuntimeModel, load_runtime

Runtime = OnnxRuntimeModel | LiteRtModel


class RuntimeCache:
    """Loaded runtimes by the file's sha256. One per device; a simulator shares one
    among its devices so a thousand fit in one process. A failed load is never
    cached, so every device still finds a broken file broken."""

    def __init__(self) -> None:
        self._loaded: dict[str, Runtime] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, sha: str) -> Runtime:
        with self._lock:
            cached = self._loaded.get(sha)
        if cached is not None:
            return cached
        runtime = load_runtime(path)
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


def feature_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per input column over the present values: a gap (NaN, which the model
    fills) is left out; a column with no value in the whole batch reports 0.
    In float64: a float32 row of 1e30 squared to inf in float32, and one such row
    made every check-in fail ("Out of range float values are not JSON compliant")."""
    filled = np.where(np.isnan(x).all(axis=0), 0.0, x).astype(np.float64)
    return {
        name: rounded(f(filled, axis=0))
        for name, f in (
            ("mean", np.nanmean),
            ("std", np.nanstd),
            ("min", np.nanmin),
            ("max", np.nanmax),
        )
    }


def rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def p95(values: list[float]) -> float:
    """numpy's default (linear) 95th percentile."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]
