"""The microcontroller's file: the digits CNN (PyTorch) through ONNX and onnx2tf to
a full-integer int8 TFLite file, run by TensorFlow Lite Micro's interpreter in a
measured tensor arena. Before, the `mcu` profile got no file at all: ONNX Runtime
cannot load under its 256 MB address-space limit ("failed to map segment from
shared object")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.config import DeviceProfile, SplitConfig, TrainConfig
from components.optimization import micro
from components.optimization.optimize import micro_problem, profile_problem
from components.optimization.report import VariantReport
from components.optimization.runtime import (
    LiteRtModel,
    MicroModel,
    load_runtime,
    measure_arena,
    predict,
)
from components.training.torch_train import train_torch
from tests.conftest import digits_subset

BOARD = DeviceProfile(runtime="micro", max_flash_kb=768, max_arena_kb=192)


@pytest.fixture(scope="module")
def tflm_file(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    data = digits_subset(1797, SplitConfig())
    result = train_torch(
        data.train, data.val, data.spec, TrainConfig(epochs=8, learning_rate=0.002)
    )
    out = tmp_path_factory.mktemp("micro")
    path = micro.convert_torch(result.model, 64, (8, 8), data.train.x[:200], out)
    return path, data.test.x, data.test.y


def test_the_digits_cnn_runs_in_tflm_as_in_litert(tflm_file):
    path, x, y = tflm_file
    assert path.name == "int8.micro.tflite"
    tflm = load_runtime(path)
    assert isinstance(tflm, MicroModel) and tflm.features == 64
    answers = predict(tflm, x)
    assert (answers == y).mean() > 0.9
    # The same file in LiteRT answers every test row the same: TFLM's kernels
    # are the reference int8 kernels.
    same = predict(_litert(path), x)
    assert (same == answers).all(), (same != answers).sum()


def _litert(path: Path) -> LiteRtModel:
    """The micro file under LiteRT (its name routes it to TFLM otherwise)."""
    copy = path.with_name("as_litert.tflite")
    copy.write_bytes(path.read_bytes())
    model = load_runtime(copy)
    assert isinstance(model, LiteRtModel)
    return model


def test_the_arena_is_measured_and_a_small_one_refused(tflm_file):
    path, _, _ = tflm_file
    report = measure_arena(path)
    assert report.ok, report.error
    assert 1_000 < report.arena_bytes < 64 * 1024
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= set(report.ops)
    short = measure_arena(path, report.arena_bytes // 2)
    assert not short.ok
    assert f"the arena of {report.arena_bytes // 2} bytes ran out" in short.error
    # Exactly what it measured is enough.
    assert measure_arena(path, report.arena_bytes).ok


def _report(name: str, size: int, arena: int | None) -> VariantReport:
    return VariantReport(
        name,
        f"{name}.x",
        size,
        size,
        0,
        0,
        1.0,
        0.0,
        0.1,
        0.1,
        0.0,
        True,
        "",
        arena_bytes=arena,
    )


def test_a_board_takes_a_tflm_file_that_fits_and_says_by_how_much_one_does_not():
    fits = _report(micro.MICRO, 30_000, 6_000)
    assert micro_problem(fits, BOARD) is None
    big = _report(micro.MICRO, 800 * 1024, 6_000)
    assert micro_problem(big, BOARD) == (
        "file 819200 bytes > max_flash_kb 768 (786432 bytes): 32768 bytes over"
    )
    hungry = _report(micro.MICRO, 30_000, 190 * 1024)
    assert micro_problem(hungry, BOARD) == (
        "arena 194560 bytes (+10% margin: 214016) > max_arena_kb 192 "
        "(196608 bytes): 17408 bytes over"
    )
    # An ONNX file is not for a board, and a TFLM file not for a gateway.
    onnx = _report("int8_static", 30_000, None)
    assert "runtime micro runs a full-integer TFLM file" in profile_problem(onnx, BOARD)
    assert profile_problem(fits, DeviceProfile()) == (
        "a TFLM file: for a profile with runtime micro"
    )


def test_a_micro_profile_is_budgeted_by_flash_and_arena():
    with pytest.raises(ValueError, match="needs max_flash_kb and max_arena_kb"):
        DeviceProfile(runtime="micro", max_flash_kb=768)
    with pytest.raises(ValueError, match="expected no runtime_memory_mb"):
        DeviceProfile(
            runtime="micro", max_flash_kb=768, max_arena_kb=192, runtime_memory_mb=256
        )
    with pytest.raises(ValueError, match="expected runtime: micro"):
        DeviceProfile(max_arena_kb=192)
