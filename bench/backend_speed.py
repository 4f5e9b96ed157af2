"""Training time per epoch, Keras against PyTorch, on the default data (same model,
batch size and epochs, no early stopping), in one run.

    .venv/bin/python -m bench.backend_speed [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.data import accuracy, default_data
from components.training.keras_train import train_keras
from components.training.model import TorchClassifier
from components.training.torch_train import train_torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    data = default_data(Path(tempfile.mkdtemp()))
    cfg = data.params.train.model_copy(
        update={"epochs": args.epochs, "patience": 10_000}
    )
    timings = {}
    for name, trainer in (("torch", train_torch), ("keras", train_keras)):
        trainer(data.train, data.val, data.spec, cfg.model_copy(update={"epochs": 1}))
        start = time.perf_counter()
        result = trainer(
            data.train, data.val, data.spec, cfg.model_copy(update={"backend": name})
        )
        per_epoch = (time.perf_counter() - start) / args.epochs
        model = (
            result.model
            if name == "keras"
            else TorchClassifier(result.model, data.spec)
        )
        timings[name] = per_epoch
        print(
            f"{name:>6}: {per_epoch * 1000:7.1f} ms/epoch, test accuracy "
            f"{accuracy(model, data.test):.4f}"
        )
    print(f"keras / torch time per epoch: {timings['keras'] / timings['torch']:.2f}x")


if __name__ == "__main__":
    main()
