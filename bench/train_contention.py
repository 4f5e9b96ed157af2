"""Retraining beside a busy process, as the worker retrains while the loop's
simulated fleet (or serving) holds a core: the keyword spotter's train stage for a
few epochs with OpenMP's default (active) waiting, with OMP_WAIT_POLICY=PASSIVE
(what the stack's worker sets, stack/services.py), and with one thread; each with
and without one busy process beside it. Ratios against the default on idle cores,
measured in the same run.

    .venv/bin/python -m bench.train_contention [--epochs 3] [--clips 250]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.kws import REPO, scratch_params

BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"


def stage(work: Path, module: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", module],
        cwd=work,
        env=os.environ | {"PYTHONPATH": str(REPO)} | env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clips", type=int, default=250)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-contention-"))
    params = scratch_params("torch", args.clips)
    params["train"].update({"epochs": args.epochs, "patience": args.epochs})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for module in ("components.data.prepare", "components.data.validate"):
        stage(work, module, {})
    train = "components.training.train"
    settings = {
        "default (active waits)": {},
        "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
        "one thread": {"OMP_NUM_THREADS": "1"},
    }
    idle = {name: stage(work, train, env) for name, env in settings.items()}
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        loaded = {name: stage(work, train, env) for name, env in settings.items()}
    finally:
        busy.kill()
    base = idle["default (active waits)"]
    print(f"train stage, DS-CNN, {args.epochs} epochs, {os.cpu_count()} cores")
    print(f"{'setting':>26} {'idle s':>8} {'x':>6} {'1 busy s':>9} {'x':>6}")
    for name in settings:
        print(
            f"{name:>26} {idle[name]:8.1f} {idle[name] / base:6.2f} "
            f"{loaded[name]:9.1f} {loaded[name] / base:6.2f}"
        )


if __name__ == "__main__":
    main()
