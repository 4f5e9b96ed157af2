"""Measuring shipped model files in the device runtimes (ONNX Runtime, LiteRT: the
agent's own classes, re-exported here): accuracy, latency, class labels. Also the
infra-validation check:
`python -m components.optimization.runtime MODEL SAMPLES --memory-mb N` loads the
file in a fresh process under an address-space limit and answers the samples."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.features import ColumnEncoding, encode
from components.errors import DataContractError

# The runtimes are the device agent's (edge_fleet/device/runtime.py, shipped as the
# `edgeloop-agent` distribution): the stack measures files with what devices run.
from edge_fleet.device.micro import MICRO_SUFFIX, ArenaReport, MicroModel
from edge_fleet.device.micro import measure as measure_arena
from edge_fleet.device.runtime import (
    CLASSES_KEY,
    INPUTS_KEY,
    LiteRtModel,
    OnnxRuntimeModel,
    load_runtime,
)

__all__ = [
    "CLASSES_KEY",
    "MICRO_SUFFIX",
    "ArenaReport",
    "LiteRtModel",
    "MicroModel",
    "OnnxRuntimeModel",
    "load_runtime",
    "measure_arena",
]


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p95_ms: float


def stamp_classes(
    path: Path, classes: list[int | str], encoding: list[dict] | None = None
) -> None:
    """Write the class labels into an ONNX file's metadata, so a device that has
    only the file reports labels (`Adelie`), not output positions; with a table
    model's `encoding` (its JSON), each input's kind too (`edgeloop.inputs`), so
    it reports a category's shares and each column's gaps."""
    import onnx

    values = {CLASSES_KEY: json.dumps([str(c) for c in classes])}
    if encoding:
        values[INPUTS_KEY] = json.dumps(
            [
                {"kind": c["kind"]}
                | ({"categories": len(c["categories"])} if c.get("categories") else {})
                for c in encoding
            ]
        )
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def predict(model: OnnxRuntimeModel | LiteRtModel, x: np.ndarray) -> np.ndarray:
    return model.logits(x).argmax(axis=1)


def model_rows(
    frame: pd.DataFrame,
    *,
    label_column: str,
    encoding: Sequence[ColumnEncoding] = (),
    features: Sequence[str] = (),
) -> np.ndarray:
    """A frame of raw rows as one model version takes them: through its own fitted
    encoding (categories, booleans, dates, gaps), or, for a model without one, its
    feature columns (`features`; all but the label where not given) as numbers. A
    column the version was trained with and the frame lacks, or text where it takes
    numbers, is a DataContractError naming it."""
    if encoding:
        missing = [c.name for c in encoding if c.name not in frame.columns]
        if missing:
            raise DataContractError(
                f"column {missing[0]!r} is missing: the model takes "
                f"{[c.name for c in encoding]}"
            )
        return encode(frame, list(encoding))
    if features:
        missing = [name for name in features if name not in frame.columns]
        if missing:
            raise DataContractError(
                f"column {missing[0]!r} is missing: the model takes {list(features)}"
            )
        frame = frame[list(features)]
    numbers = frame.drop(columns=label_column, errors="ignore")
    for name in numbers.columns:
        if (
            pd.to_numeric(numbers[name], errors="coerce")
            .isna()
            .gt(numbers[name].isna())
            .any()
        ):
            raise DataContractError(
                f"column {name!r} holds text, and this model takes numbers only "
                "(it was trained without a `features:` section)"
            )
    return numbers.to_numpy(np.float32)


def predicted_labels(
    model: OnnxRuntimeModel | LiteRtModel,
    frame: pd.DataFrame,
    classes: list,
    *,
    label_column: str,
    encoding: Sequence[ColumnEncoding] = (),
    features: Sequence[str] = (),
) -> np.ndarray:
    """The model's class label for each raw row of a frame (its features, and the
    label column `data.label_column` if there, which is left out), encoded as
    that model version takes them (`model_rows`)."""
    x = model_rows(
        frame, label_column=label_column, encoding=encoding, features=features
    )
    return np.asarray(classes, dtype=object)[predict(model, x)]


def labelled_accuracy(
    model: OnnxRuntimeModel | LiteRtModel,
    test: pd.DataFrame,
    classes: list,
    *,
    label_column: str,
    encoding: Sequence[ColumnEncoding] = (),
    features: Sequence[str] = (),
) -> float:
    """Accuracy on a split of raw rows (features + the label column)."""
    predicted = predicted_labels(
        model,
        test,
        classes,
        label_column=label_column,
        encoding=encoding,
        features=features,
    )
    return float((predicted == test[label_column].to_numpy(dtype=object)).mean())


def single_sample_latency(
    model: OnnxRuntimeModel | LiteRtModel,
    x: np.ndarray,
    runs: int = 300,
    warmup: int = 30,
) -> Latency:
    """Median and p95 of one-sample inference, warm, over `runs` calls."""
    rows = np.asarray(x, np.float32)
    for i in range(warmup):
        model.logits(rows[i % len(rows)][None, :])
    times = []
    for i in range(runs):
        row = rows[i % len(rows)][None, :]
        start = time.perf_counter()
        model.logits(row)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return Latency(statistics.median(times), times[int(0.95 * (len(times) - 1))])


def _check(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="infra-validation of a model file")
    parser.add_argument("model", type=Path)
    parser.add_argument("samples", type=Path, help=".npy of feature rows")
    parser.add_argument("--memory-mb", type=int, default=0, help="0: no limit")
    args = parser.parse_args(argv)
    if args.memory_mb:
        limit = args.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        model = load_runtime(args.model)
        answers = predict(model, np.load(args.samples))
    except Exception as exc:  # noqa: BLE001 - any failure to load/answer is the result
        json.dump({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, sys.stdout)
        return 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(
        {"ok": True, "answers": answers.tolist(), "peak_rss_mb": peak_mb}, sys.stdout
    )
    return 0


if __name__ == "__main__":
    sys.exit(_check())
