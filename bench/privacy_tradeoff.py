"""Accuracy against epsilon on the default data: central DP-SGD (Opacus) at several
target epsilons, and federated with client-side Opacus, each against the non-private
model of the same mode trained in this run.

    .venv/bin/python -m bench.privacy_tradeoff [--epsilons 1 3 8] [--federated]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bench.data import accuracy, default_data, federated_on
from components.training.model import TorchClassifier
from components.training.torch_train import train_torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--federated",
        action="store_true",
        help="also federated (client_opacus), 5 clients",
    )
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)  # keep the table readable
    data = default_data(Path(tempfile.mkdtemp()))
    base = data.params.train.model_copy(update={"epochs": args.epochs})

    print(
        f"central DP-SGD, {args.epochs} epochs max, delta={base.privacy.target_delta}"
    )
    print(
        f"{'epsilon':>8} {'spent':>7} {'test acc':>9} {'vs non-private':>15} {'s':>6}"
    )
    reference = None
    for eps in [None, *args.epsilons]:
        cfg = (
            base
            if eps is None
            else base.model_copy(
                update={
                    "privacy": base.privacy.model_copy(
                        update={"enabled": True, "target_epsilon": eps}
                    )
                }
            )
        )
        start = time.perf_counter()
        result = train_torch(data.train, data.val, data.spec, cfg)
        acc = accuracy(TorchClassifier(result.model, data.spec), data.test)
        reference = acc if reference is None else reference
        spent = f"{result.privacy.epsilon:.2f}" if result.privacy else "inf"
        print(
            f"{eps or 'inf':>8} {spent:>7} {acc:9.4f} {acc / reference:14.3f}x "
            f"{time.perf_counter() - start:6.1f}"
        )

    if not args.federated:
        return
    print(f"\nfederated (5 clients, IID, {args.rounds} rounds, client-side Opacus)")
    reference = None
    for eps in [None, *args.epsilons]:
        cfg = base.model_copy(
            update={
                "federated": base.federated.model_copy(
                    update={
                        "enabled": True,
                        "num_clients": 5,
                        "rounds": args.rounds,
                        "dp": "none" if eps is None else "client_opacus",
                    }
                ),
                "privacy": base.privacy.model_copy(
                    update={"target_epsilon": eps or 1.0}
                ),
            }
        )
        result = federated_on(data, cfg)
        acc = result.history[-1]["test_accuracy"]
        reference = acc if reference is None else reference
        spent = f"{result.privacy.epsilon:.2f}" if result.privacy else "inf"
        print(f"{eps or 'inf':>8} {spent:>7} {acc:9.4f} {acc / reference:14.3f}x")


if __name__ == "__main__":
    main()
