"""Keyword spotting, the default `kws` preset end to end, against MLPerf Tiny's
reference (its DS-CNN on Speech Commands v2: int8 file 53,936 bytes, TFLM arena
24.3 KB, about 92% top-1, quality target 90%): the clips spoken, validated and
split by voice, the DS-CNN trained, its int8 files made and measured in each
runtime. Each stage's time is printed (target: all within 10 minutes on 2 cores).

    .venv/bin/python -m bench.kws [--backend torch|keras] [--clips 250]

Runs the DVC stages' own entry points (`python -m components...`) in a scratch
project of the repository's params with data/presets/kws.yaml merged in."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from components.data.presets import PRESETS, merge

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    ("prepare (speak + MFCC)", "components.data.prepare"),
    ("validate (contract + voice split)", "components.data.validate"),
    ("train", "components.training.train"),
    ("evaluate", "components.evaluation.evaluate"),
    ("optimize (int8 files, measured)", "components.optimization.optimize"),
]
MLPERF = {"file_bytes": 53_936, "arena_bytes": int(24.3 * 1024), "top1": 0.92}


def scratch_params(backend: str, clips: int) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(params, yaml.safe_load((PRESETS / "kws.yaml").read_text()))
    params["train"]["backend"] = backend
    params["data"]["speech"]["clips_per_class"] = clips
    if backend == "keras":
        params["optimize"]["ship_variant"] = "int8_static"
    return params


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["torch", "keras"], default="torch")
    parser.add_argument("--clips", type=int, default=250, help="clips per class")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-kws-"))
    (work / "params.yaml").write_text(
        yaml.safe_dump(scratch_params(args.backend, args.clips), sort_keys=False)
    )
    env = os.environ | {"PYTHONPATH": str(REPO)}
    total = 0.0
    print(
        f"kws preset, backend {args.backend}, {args.clips} clips per class, in {work}"
    )
    for name, module in STAGES:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", module],
            check=False,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        total += seconds
        print(f"  {name:<36} {seconds:7.1f} s")
        if done.returncode != 0:
            print(done.stderr[-2000:])
            raise SystemExit(f"stage {module} failed")
    print(f"  {'all stages':<36} {total:7.1f} s  (target: 600 s on 2 cores)")
    card = json.loads((work / "data" / "prepared" / "data_card.json").read_text())
    report = json.loads((work / "reports" / "optimize" / "variants.json").read_text())
    metrics = json.loads((work / "reports" / "evaluate" / "metrics.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}
    print(
        f"\nclips {card['rows']}; test split {card['splits']['test']['rows']} clips of "
        "voices held out of training"
    )
    print(f"top-1 on held-out voices (fp32 model): {metrics['test_accuracy']:.4f}")
    print(
        f"{'variant':>18} {'bytes':>8} {'arena B':>8} {'top-1':>7} {'vs fp32':>8} "
        f"{'worse/better':>13} {'p':>6} {'ms/clip':>8}  runtime"
    )
    for name, v in variants.items():
        arena = v.get("arena_bytes") or 0
        runtime = (
            "TFLM"
            if name.startswith("micro")
            else ("LiteRT" if v["file"].endswith(".tflite") else "ONNX Runtime")
        )
        print(
            f"{name:>18} {v['size_bytes']:8d} {arena or '-':>8} {v['accuracy']:7.4f} "
            f"{-100 * v['accuracy_drop']:+7.2f}pt {v.get('rows_worse', 0):>6}/"
            f"{v.get('rows_better', 0):<6} {v.get('drop_p_value', 1.0):6.3f} "
            f"{v['latency_median_ms']:8.3f}  {runtime}"
        )
    micro = variants.get("micro_int8")
    print("\nagainst MLPerf Tiny's reference (DS-CNN, Speech Commands v2):")
    if micro:
        print(
            f"  TFLM file   {micro['size_bytes']:>7} bytes vs {MLPERF['file_bytes']} "
            f"({micro['size_bytes'] / MLPERF['file_bytes']:.2f}x; target <= 65,536)"
        )
        print(
            f"  TFLM arena  {micro['arena_bytes']:>7} bytes vs {MLPERF['arena_bytes']} "
            f"({micro['arena_bytes'] / MLPERF['arena_bytes']:.2f}x; target <= 32,768)"
        )
        print(
            f"  int8 top-1  {micro['accuracy']:.4f} vs {MLPERF['top1']} "
            "(target >= 0.90; "
            f"{-100 * micro['accuracy_drop']:+.2f} pt vs fp32 on the same clips, "
            "target within 1 pt)"
        )
    else:
        print("  no micro_int8 file was made (see reports/logs/optimize.log)")
    print(f"per profile: {report['ship_per_profile']}")


if __name__ == "__main__":
    main()
