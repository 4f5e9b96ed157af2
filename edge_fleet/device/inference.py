"""What a device runs: its model files loaded in their runtime (ONNX Runtime or
LiteRT), kept by the file's hash, and one batch's logits summarised for telemetry."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from components.optimization.runtime import LiteRtModel, OnnxRuntimeModel, load_runtime

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


def predictions(logits: np.ndarray) -> dict:
    """Inferences, errors (non-finite rows), mean confidence and predicted class
    counts of one batch's logits."""
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
        "class_counts": {str(k): int(v) for k, v in zip(labels, counts, strict=True)},
    }


def rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]
