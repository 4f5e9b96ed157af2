"""A model file's answers on another x86 CPU than this one: valgrind's CPU has
AVX2 but neither AVX-512 nor VNNI, so ONNX Runtime picks the int8 kernels that
devices without VNNI run (tests/system_packages.sh installs valgrind)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

_ANSWER = """
import sys, numpy as np
from components.optimization.runtime import OnnxRuntimeModel
np.save(sys.argv[3], OnnxRuntimeModel(sys.argv[1]).logits(np.load(sys.argv[2])))
"""


def logits_without_vnni(model: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind not found: run tests/system_packages.sh"
    rows, out = tmp / "rows.npy", tmp / "logits.npy"
    np.save(rows, x)
    done = subprocess.run(
        [valgrind, "--tool=none", "-q", sys.executable, "-c", _ANSWER]
        + [str(model), str(rows), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out)
