"""Device runtimes for shipped model files: ONNX Runtime for .onnx, the LiteRT
interpreter for .tflite (no TensorFlow needed). Also the infra-validation check:
`python -m components.optimization.runtime MODEL SAMPLES --memory-mb N` loads the
file in a fresh process under an address-space limit and answers the samples."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p95_ms: float


CLASSES_KEY = "edgeloop.classes"


class OnnxRuntimeModel:
    """One ONNX Runtime session on `threads` cores (one by default, as on a small
    device; serving gives each worker its share of the machine)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    @property
    def features(self) -> int:
        """The width of one input row (the input's last dimension)."""
        width = self.session.get_inputs()[0].shape[-1]
        if not isinstance(width, int):
            raise ValueError(f"input {self.input!r} has no fixed width ({width!r})")
        return width

    @property
    def classes(self) -> list[str] | None:
        """The class labels the file names (ONNX metadata `edgeloop.classes`, set
        by the optimize stage), by output position; None: a file without them."""
        names = self.session.get_modelmeta().custom_metadata_map.get(CLASSES_KEY)
        return json.loads(names) if names else None

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.asarray(x, np.float32)})[0]


def stamp_classes(path: Path, classes: list[int | str]) -> None:
    """Write the class labels into an ONNX file's metadata, so a device that has
    only the file reports labels (`Adelie`), not output positions."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != CLASSES_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = CLASSES_KEY, json.dumps([str(c) for c in classes])
    onnx.save(model, str(path))


class LiteRtModel:
    """Runs one sample at a time (the interpreter's tensors have a fixed batch of 1);
    int8 input/output tensors are quantized and dequantized with their own scales."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        # From the bytes, not the path: the file may be removed once loaded.
        self.interpreter = Interpreter(
            model_content=path.read_bytes(), num_threads=threads
        )
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]

    @property
    def features(self) -> int:
        """The width of one input row (the input's last dimension)."""
        return int(self.inp["shape"][-1])

    classes = None  # a .tflite file carries no labels here: classes by position

    def _one(self, row: np.ndarray) -> np.ndarray:
        value = row[None, :].astype(np.float32)
        scale, zero = self.inp["quantization"]
        if self.inp["dtype"] != np.float32 and scale:
            value = np.clip(np.round(value / scale + zero), -128, 127)
        self.interpreter.set_tensor(self.inp["index"], value.astype(self.inp["dtype"]))
        self.interpreter.invoke()
        result = self.interpreter.get_tensor(self.out["index"]).astype(np.float32)
        scale, zero = self.out["quantization"]
        if self.out["dtype"] != np.float32 and scale:
            result = (result - zero) * scale
        return result[0]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.stack([self._one(row) for row in np.asarray(x, np.float32)])


def load_runtime(path: Path, threads: int = 1) -> OnnxRuntimeModel | LiteRtModel:
    if path.suffix == ".onnx":
        return OnnxRuntimeModel(path, threads)
    if path.suffix == ".tflite":
        return LiteRtModel(path, threads)
    raise ValueError(f"{path}: no device runtime for {path.suffix!r} files")


def predict(model: OnnxRuntimeModel | LiteRtModel, x: np.ndarray) -> np.ndarray:
    return model.logits(x).argmax(axis=1)


def predicted_labels(
    model: OnnxRuntimeModel | LiteRtModel,
    frame: pd.DataFrame,
    classes: list,
    *,
    label_column: str,
) -> np.ndarray:
    """The model's class label for each row of a prepared frame (its features, and
    the label column `data.label_column` if there, which is left out)."""
    x = frame.drop(columns=label_column, errors="ignore").to_numpy(np.float32)
    return np.asarray(classes, dtype=object)[predict(model, x)]


def labelled_accuracy(
    model: OnnxRuntimeModel | LiteRtModel,
    test: pd.DataFrame,
    classes: list,
    *,
    label_column: str,
) -> float:
    """Accuracy on a prepared split (features + the label column)."""
    predicted = predicted_labels(model, test, classes, label_column=label_column)
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
