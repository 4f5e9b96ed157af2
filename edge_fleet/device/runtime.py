"""The device runtimes for shipped model files: ONNX Runtime for .onnx, the LiteRT
interpreter for .tflite (no TensorFlow needed), TensorFlow Lite Micro for
.micro.tflite (micro.py). Each is an optional dependency of the agent
(`edgeloop-agent[onnx]`, `[litert]`, `[micro]`), imported when a file of its kind is
loaded. The stack evaluates and benchmarks files with these same classes
(components/optimization/runtime.py), so what is measured is what a device runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from edge_fleet.device.micro import (
    MEASURE_ARENA,
    MicroModel,
    dequantized,
    is_micro,
    quantized,
)

CLASSES_KEY = "edgeloop.classes"
# A table model's inputs by kind: [{"kind": "categorical", "categories": 3},
# {"kind": "numeric"}, ...], so a device reports a category's shares, not the
# mean of its index (components/optimization/runtime.py writes it).
INPUTS_KEY = "edgeloop.inputs"


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

    @property
    def inputs(self) -> list[dict] | None:
        """Each input column's kind (ONNX metadata `edgeloop.inputs`); None: a
        file without them (images, or a file optimized before they existed)."""
        kinds = self.session.get_modelmeta().custom_metadata_map.get(INPUTS_KEY)
        return json.loads(kinds) if kinds else None

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.asarray(x, np.float32)})[0]


class LiteRtModel:
    """Runs one sample at a time (the interpreter's tensors have a fixed batch of 1);
    int8 input/output tensors are quantized and dequantized with their own scales.
    One call at a time: an interpreter's tensors are shared state (the agent's
    local inference and its telemetry run in different threads)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        # From the bytes, not the path: the file may be removed once loaded.
        self.interpreter = Interpreter(
            model_content=path.read_bytes(), num_threads=threads
        )
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self._lock = threading.Lock()

    @property
    def features(self) -> int:
        """The width of one input row: the input tensor's size past the batch (an
        image file takes [1, h, w, 1])."""
        return int(np.prod(self.inp["shape"][1:]))

    classes = None  # a .tflite file carries no labels here: classes by position
    inputs = None

    def _one(self, row: np.ndarray) -> np.ndarray:
        scale, zero = self.inp["quantization"]
        value = quantized(row, self.inp["shape"], self.inp["dtype"], scale, zero)
        self.interpreter.set_tensor(self.inp["index"], value)
        self.interpreter.invoke()
        result = self.interpreter.get_tensor(self.out["index"])
        scale, zero = self.out["quantization"]
        return dequantized(result, scale, zero)[0]

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.stack([self._one(row) for row in np.asarray(x, np.float32)])


def answer_problem(
    logits: np.ndarray, rows: int, classes: int | None = None
) -> str | None:
    """What is wrong with a runtime's answer to `rows` rows (None: nothing): one
    row of logits per input row, `classes` of them when known, all finite. The
    agent's smoke test and the fleet server's upload check (loadcheck.py) judge
    an answer by this."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != rows:
        return f"answered shape {logits.shape} for {rows} rows"
    if classes is not None and logits.shape[1] != classes:
        return f"{logits.shape[1]} outputs per row: expected {classes}"
    if not np.isfinite(logits).all():
        return "non-finite values in its answer"
    return None


def load_runtime(
    path: Path, threads: int = 1, arena_size: int | None = None
) -> OnnxRuntimeModel | LiteRtModel | MicroModel:
    """The file in its runtime, by its name: `.micro.tflite` in TensorFlow Lite
    Micro with a tensor arena of `arena_size` bytes (the device's; default: room
    to measure), `.tflite` in LiteRT, `.onnx` in ONNX Runtime."""
    if is_micro(path):
        return MicroModel(path, arena_size or MEASURE_ARENA)
    if path.suffix == ".onnx":
        return OnnxRuntimeModel(path, threads)
    if path.suffix == ".tflite":
        return LiteRtModel(path, threads)
    raise ValueError(f"{path}: no device runtime for {path.suffix!r} files")
