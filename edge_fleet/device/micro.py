"""TensorFlow Lite Micro, the mcu profile's runtime: the C++ interpreter and kernels
a microcontroller's firmware links (`tflite-micro`, the agent's `[micro]` extra),
running a full-integer int8 TFLite file in a tensor arena of a fixed size, as a
board does.

`python -m edge_fleet.device.micro FILE [--arena-bytes N]` loads the file in an
arena of N bytes (default: 4 MB, to measure what it needs), answers a row of zeros
and prints one JSON line: {"ok": true, "arena_bytes": USED, "ops": [...]} or
{"ok": false, "error": "..."}. The arena's use is what TFLM's recording allocator
reports ("Arena allocation total N bytes", written to the C-level stderr); a
file that does not fit says by how many bytes and which op failed to prepare.
It runs in its own process because a too-small arena can crash the process
instead of raising (tensorflow/tflite-micro#2037), and because the allocator's
report goes to file descriptor 2, not to Python."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MICRO_SUFFIX = ".micro.tflite"  # a file for TFLM: full-integer, run in an arena
MEASURE_ARENA = 4 * 2**20
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_MISSING = re.compile(r"Requested: (\d+), available (\d+), missing: (\d+)")
_NODE = re.compile(r"Node (\w+) \(number (\d+)\) failed to prepare")
_NO_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


@dataclass(frozen=True)
class ArenaReport:
    """What TFLM said of one file in an arena of `arena_size` bytes."""

    ok: bool
    arena_size: int
    arena_bytes: int | None = None  # used, as the recording allocator reports
    ops: list[str] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class Board:
    """What a microcontroller has for a model: the tensor arena TFLM runs in, and
    the flash the file may take (None: not checked here)."""

    arena_bytes: int
    flash_bytes: int | None = None


def is_micro(path: Path) -> bool:
    return path.name.endswith(MICRO_SUFFIX)


def builtin_ops(model: bytes) -> list[str]:
    """The file's operators by builtin name (TFLite's flatbuffer schema, as the
    tflite-micro package ships it), in the order of its operator codes."""
    from tflite_micro.python.tflite_micro.runtime import (
        convert_bytearray_to_object,
        get_builtin_code_from_operator_code,
    )
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    parsed = convert_bytearray_to_object(bytearray(model))
    return [
        names.get(get_builtin_code_from_operator_code(code), "CUSTOM")
        for code in parsed.operatorCodes or []
    ]


def measure(
    path: Path, arena_size: int = MEASURE_ARENA, timeout: float = 120
) -> ArenaReport:
    """Load `path` in TFLM with an arena of `arena_size` bytes in a fresh process,
    answer a row, and read the arena's use or why it failed."""
    command = [
        sys.executable,
        "-m",
        "edge_fleet.device.micro",
        str(path),
        "--arena-bytes",
        str(arena_size),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False
    )
    c_side = done.stderr
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return ArenaReport(
            False,
            arena_size,
            error=f"TFLM's process died (exit {done.returncode}): "
            + _why(c_side, arena_size),
        )
    if not answer["ok"]:
        return ArenaReport(
            False,
            arena_size,
            ops=answer.get("ops", []),
            error=_why(c_side, arena_size) or answer["error"],
        )
    used = _TOTAL.search(c_side)
    return ArenaReport(
        True,
        arena_size,
        arena_bytes=int(used.group(1)) if used else None,
        ops=answer.get("ops", []),
    )


def fit_problem(path: Path, board: Board | None) -> str | None:
    """What keeps a TFLM file from running on this device (None: nothing): it
    must fit the board's flash, and load and answer in TFLM with the board's
    arena; one that does not says how many bytes it needs against what it has."""
    size = path.stat().st_size
    if board is not None and board.flash_bytes is not None and size > board.flash_bytes:
        return (
            f"flash: the file is {size} bytes, this device has {board.flash_bytes} "
            f"for a model ({size - board.flash_bytes} bytes over)"
        )
    arena_size = board.arena_bytes if board is not None else None
    report = measure(path, arena_size or MEASURE_ARENA)
    if report.ok:
        return None
    needs = measure(path) if arena_size else report
    if needs.ok and needs.arena_bytes is not None and arena_size:
        return (
            f"TFLM arena: the file needs {needs.arena_bytes} bytes, this device has "
            f"{arena_size} ({needs.arena_bytes - arena_size} bytes over)"
        )
    return f"TFLM: {report.error}"


def _why(c_side: str, arena_size: int) -> str:
    """TFLM's own words on a failed load, shortest first: a missing op, the bytes
    an allocation lacked, the op that failed to prepare."""
    parts = []
    if op := _NO_OP.search(c_side):
        parts.append(f"op {op.group(1)} is not in TFLM's op resolver")
    if short := _MISSING.search(c_side):
        requested, available, missing = short.groups()
        parts.append(
            f"the arena of {arena_size} bytes ran out: an allocation of {requested} "
            f"bytes found {available} left ({missing} short)"
        )
    if node := _NODE.search(c_side):
        parts.append(f"op {node.group(1)} (node {node.group(2)}) failed to prepare")
    if parts:
        return "; ".join(parts)
    tail = [line for line in c_side.strip().splitlines() if line.strip()]
    return tail[-1][:300] if tail else ""


def quantized(
    row: np.ndarray, shape: np.ndarray, dtype: type, scale: float, zero: int
) -> np.ndarray:
    """One row as an interpreter's input tensor: reshaped to it (an image file
    takes [1, h, w, 1]) and, for an integer input, quantized with its scale and
    zero point (LiteRT's and TFLM's int8 files alike)."""
    value = row.reshape(shape).astype(np.float32)
    if dtype != np.float32 and scale:
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / scale + zero), info.min, info.max)
    return value.astype(dtype)


def dequantized(result: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """An output tensor as float logits (an integer output with its scale)."""
    result = result.astype(np.float32)
    return (result - zero) * scale if scale else result


class MicroModel:
    """A full-integer TFLite file in TFLM's interpreter with a fixed arena of
    `arena_size` bytes; rows are quantized with the input's scale and zero point
    and reshaped to its tensor (an image model takes [1, h, w, 1]), one at a time.
    One call at a time: the interpreter's tensors are shared state."""

    classes = None  # a .tflite file carries no labels here: classes by position
    inputs = None

    def __init__(self, path: Path, arena_size: int = MEASURE_ARENA) -> None:
        from tflite_micro import runtime as tflm

        self.interpreter = tflm.Interpreter.from_bytes(
            path.read_bytes(), arena_size=arena_size
        )
        self.inp = self.interpreter.get_input_details(0)
        self.out = self.interpreter.get_output_details(0)
        self._lock = threading.Lock()

    @property
    def features(self) -> int:
        """The width of one input row: the input tensor's size past the batch."""
        return int(np.prod(self.inp["shape"][1:]))

    def _one(self, row: np.ndarray) -> np.ndarray:
        quant = self.inp["quantization_parameters"]
        scale = quant["scales"][0] if len(quant["scales"]) else 0.0
        zero = quant["zero_points"][0] if len(quant["zero_points"]) else 0
        value = quantized(row, self.inp["shape"], self.inp["dtype"], scale, zero)
        self.interpreter.set_input(value, 0)
        self.interpreter.invoke()
        quant = self.out["quantization_parameters"]
        scale = quant["scales"][0] if len(quant["scales"]) else 0.0
        zero = quant["zero_points"][0] if len(quant["zero_points"]) else 0
        return dequantized(self.interpreter.get_output(0), scale, zero).reshape(-1)

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.stack([self._one(row) for row in np.asarray(x, np.float32)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("file", type=Path)
    parser.add_argument("--arena-bytes", type=int, default=MEASURE_ARENA)
    args = parser.parse_args(argv)
    answer: dict = {"ok": False}
    try:
        answer["ops"] = builtin_ops(args.file.read_bytes())
        model = MicroModel(args.file, args.arena_bytes)
        model.logits(np.zeros((1, model.features), np.float32))
        model.interpreter.print_allocations()  # to the C-level stderr
        answer["ok"] = True
    except Exception as exc:  # noqa: BLE001 - any failure to load or run is the answer
        answer["error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    sys.stderr.flush()
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
