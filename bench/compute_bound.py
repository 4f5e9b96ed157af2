"""A compute-bound reference model, so that an int8 target means something: the
digits images upsampled to 32x32 and a MobileNet-style depthwise-separable CNN (3 M
multiply-adds per inference at width 1, 43 M at the default width 4, where the
default digits model has 34 µs of work), trained briefly with PyTorch, exported
and quantized by the optimize stage's own code (`compress.export_onnx`,
`compress.quantize_int8_static`: QDQ, per-channel int8 weights, calibrated on
training rows), and measured side by side with its fp32 file in one run: size,
single-sample latency in ONNX Runtime on one thread (the stage's
`single_sample_latency`, warm, median), test accuracy.

    .venv/bin/python -m bench.compute_bound [--width 4] [--epochs 12] [--runs 2000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from components.optimization import compress
from components.optimization.runtime import load_runtime, predict, single_sample_latency

SIDE = 32


def upsampled_digits(seed: int = 0) -> tuple[np.ndarray, ...]:
    """The 8x8 digits, bilinear to 32x32, scaled to 0..1, as rows of 1,024."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    big = nn.functional.interpolate(images, size=(SIDE, SIDE), mode="bilinear")
    x = big.reshape(len(big), -1).numpy()
    return train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )


def separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def ds_cnn(width: int = 1) -> nn.Sequential:
    """MobileNet-style: a strided 3x3 convolution, then depthwise 3x3 + pointwise
    1x1 blocks; `width` multiplies every layer's channels."""
    c = [n * width for n in (32, 64, 128, 128, 256)]
    return nn.Sequential(
        nn.Unflatten(1, (1, SIDE, SIDE)),
        nn.Conv2d(1, c[0], 3, 2, 1, bias=False),
        nn.BatchNorm2d(c[0]),
        nn.ReLU(),
        *separable(c[0], c[1], 1),
        *separable(c[1], c[2], 2),
        *separable(c[2], c[3], 1),
        *separable(c[3], c[4], 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c[4], 10),
    )


def macs(model: nn.Module) -> int:
    """Multiply-adds of one inference: convolutions and the linear layer."""
    total = 0

    def count(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = (
                module.in_channels // module.groups * np.prod(module.kernel_size)
            )
            total += int(output.numel() * per_output)
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, SIDE * SIDE))
    for hook in hooks:
        hook.remove()
    return total


def train(
    x: np.ndarray, y: np.ndarray, epochs: int, seed: int, width: int
) -> nn.Sequential:
    torch.manual_seed(seed)
    model = ds_cnn(width)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=4, help="channel multiplier")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="edgeloop-compute-bound-"))
    x_train, x_test, y_train, y_test = upsampled_digits(args.seed)
    t0 = time.perf_counter()
    model = train(x_train, y_train, args.epochs, args.seed, args.width)
    trained_s = time.perf_counter() - t0
    fp32 = compress.export_onnx(model, SIDE * SIDE, work / "fp32.onnx")
    int8 = compress.quantize_int8_static(fp32, work / "int8_static.onnx", x_train[:300])
    rows = {}
    for name, path in (("fp32", fp32), ("int8_static", int8)):
        runtime = load_runtime(path)  # one thread, as on a small device
        latency = single_sample_latency(runtime, x_test, runs=args.runs)
        rows[name] = {
            "kb": path.stat().st_size / 1024,
            "ms": latency.median_ms,
            "p95": latency.p95_ms,
            "accuracy": float((predict(runtime, x_test) == y_test).mean()),
        }
    base, q = rows["fp32"], rows["int8_static"]
    flags = _cpu_flags()
    out = [
        f"DS-CNN (width x{args.width}) on digits at {SIDE}x{SIDE}: "
        f"{macs(model) / 1e6:.2f} M MACs, "
        f"{compress.count_parameters(model)} parameters, trained {args.epochs} "
        f"epochs in {trained_s:.0f} s; {platform.machine()}, "
        f"{'VNNI' if 'avx512_vnni' in flags or 'avx_vnni' in flags else 'no VNNI'}",
        "",
        "| variant | KB | size vs fp32 | median ms | p95 ms | speed vs fp32 | "
        "test accuracy | vs fp32 (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        out.append(
            f"| {name} | {r['kb']:.0f} | {r['kb'] / base['kb']:.2f}x | "
            f"{r['ms']:.3f} | {r['p95']:.3f} | {base['ms'] / r['ms']:.2f}x | "
            f"{r['accuracy']:.4f} | {(r['accuracy'] - base['accuracy']) * 100:+.2f} |"
        )
    met = (
        q["kb"] / base["kb"] <= 0.3,
        base["ms"] / q["ms"] >= 1.5,
        abs(q["accuracy"] - base["accuracy"]) <= 0.01,
    )
    said = ["met" if m else "NOT met" for m in met]
    out.append(
        f"\ntargets: size <= 0.3x {said[0]}; speed >= 1.5x {said[1]}; "
        f"accuracy within 1 point {said[2]}"
    )
    sys.stdout.write("\n".join(out) + "\n")


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


if __name__ == "__main__":
    main()
