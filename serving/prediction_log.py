"""A sample of served inputs and predictions, appended to rotated Parquet files by a
background thread so that requests never wait for the disk."""

from __future__ import annotations

import queue
import random
import threading
import time
from pathlib import Path

import pandas as pd


class PredictionLog:
    def __init__(self, folder: Path, sample_rate: float, rows_per_file: int) -> None:
        self.folder, self.rate, self.rows_per_file = folder, sample_rate, rows_per_file
        self.queue: queue.Queue[dict | None] = queue.Queue(maxsize=100_000)
        self.dropped = 0
        self.thread = threading.Thread(
            target=self._write, daemon=True, name="prediction-log"
        )
        self.thread.start()

    def offer(
        self, features: list[float], label: object, confidence: float, version: str
    ) -> None:
        """Called on the request path: a random draw and a non-blocking put."""
        if self.rate <= 0 or random.random() >= self.rate:
            return
        row = {
            "ts": time.time(),
            "model_version": version,
            "label": label,
            "confidence": confidence,
        } | {f"f{i}": v for i, v in enumerate(features)}
        try:
            self.queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _write(self) -> None:
        rows: list[dict] = []
        while True:
            try:
                row = self.queue.get(timeout=1.0)
            except queue.Empty:
                row = {}
            if row is None or len(rows) >= self.rows_per_file or (not row and rows):
                self._flush(rows)
                rows = []
            if row is None:
                return
            if row:
                rows.append(row)

    def _flush(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"predictions-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns()}.parquet"
        tmp = self.folder / f".{name}"
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        tmp.rename(self.folder / name)
