"""Size, single-sample latency and accuracy of each device variant against the fp32
ONNX model measured in the same run, on the default data (the optimize stage's own
measurements: ONNX Runtime, one thread, warm, median of many single-sample calls).

    .venv/bin/python -m bench.optimize_variants [--runs 2000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.data import default_data
from components.data.sources import load_source
from components.data.split import split_dataset
from components.optimization.optimize import optimize_model
from components.training.model import save_model
from components.training.torch_train import train_torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    data = default_data(work)
    params = data.params.model_copy(
        update={
            "optimize": data.params.optimize.model_copy(
                update={"latency_runs": args.runs}
            )
        }
    )
    result = train_torch(data.train, data.val, data.spec, params.train)
    save_model(result.model, data.spec, work / "model")
    split = split_dataset(
        load_source(params.data).frame, params.split, params.data.label_column
    )
    prepared = work / "prepared"
    prepared.mkdir()
    for name in ("train", "test"):
        getattr(split, name).to_parquet(prepared / f"{name}.parquet", index=False)
    reference, reports = optimize_model(
        params, work / "model", prepared, work / "variants"
    )
    base = next(r for r in reports if r.name == "fp32")
    print(
        f"PyTorch model test accuracy {reference:.4f}; baseline: fp32 ONNX "
        f"{base.size_bytes / 1024:.1f} KB, {base.latency_median_ms * 1000:.1f} us"
    )
    print(
        f"{'variant':>20} {'KB':>7} {'size x':>7} {'median us':>10} {'speedup':>8} "
        f"{'accuracy':>9} {'drop pt':>8} {'gate':>6}"
    )
    for r in reports:
        size_ratio = r.size_bytes / base.size_bytes
        print(
            f"{r.name:>20} {r.size_bytes / 1024:7.1f} "
            f"{size_ratio:7.2f} {r.latency_median_ms * 1000:10.1f} "
            f"{base.latency_median_ms / r.latency_median_ms:7.2f}x {r.accuracy:9.4f} "
            f"{r.accuracy_drop * 100:8.2f} {'pass' if r.accepted else 'reject':>6}"
        )


if __name__ == "__main__":
    main()
