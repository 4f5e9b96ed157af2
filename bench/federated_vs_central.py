"""Central against federated (IID and Dirichlet non-IID) after the same number of
local epochs, and the rounds federated needs to come within 2 points of central.

    .venv/bin/python -m bench.federated_vs_central [--rounds 30] [--clients 5]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bench.data import accuracy, default_data, federated_on
from components.config import FederatedConfig
from components.training.model import TorchClassifier
from components.training.torch_train import train_torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)  # keep the table readable
    data = default_data(Path(tempfile.mkdtemp()))
    base = data.params.train

    # Central baseline: as many epochs as federated rounds x 1 local epoch, no early
    # stop, so both see the data the same number of times.
    start = time.perf_counter()
    central_cfg = base.model_copy(update={"epochs": args.rounds, "patience": 10_000})
    central = accuracy(
        TorchClassifier(
            train_torch(data.train, data.val, data.spec, central_cfg).model, data.spec
        ),
        data.test,
    )
    print(
        f"central, {args.rounds} epochs: test accuracy {central:.4f} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    print(
        f"{'partition':>16} {'test acc':>9} {'vs central':>11} "
        f"{'rounds to -2pt':>15} {'s':>6}"
    )
    for kind in ("iid", "dirichlet"):
        cfg = base.model_copy(
            update={
                "federated": FederatedConfig(
                    enabled=True,
                    num_clients=args.clients,
                    rounds=args.rounds,
                    local_epochs=1,
                    partition={"kind": kind, "alpha": args.alpha},
                )
            }
        )
        start = time.perf_counter()
        result = federated_on(data, cfg)
        curve = [row["test_accuracy"] for row in result.history]
        within = next((r for r, acc in enumerate(curve) if acc >= central - 0.02), None)
        name = kind if kind == "iid" else f"dirichlet({args.alpha})"
        print(
            f"{name:>16} {curve[-1]:9.4f} {curve[-1] / central:10.3f}x "
            f"{within if within is not None else 'not reached':>15} "
            f"{time.perf_counter() - start:6.1f}"
        )


if __name__ == "__main__":
    main()
