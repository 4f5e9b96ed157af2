"""Making the PyTorch model smaller for devices: structured pruning that really
removes channels and units (a smaller dense model, not a mask), ONNX export, and
ONNX Runtime int8 quantization (static QDQ with per-channel weights, and dynamic)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

WEIGHTED = (nn.Conv2d, nn.Linear)


def _keep(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """Indices of the output units with the largest L1 norm, in their order."""
    norms = weight.detach().abs().flatten(1).sum(dim=1)
    n_keep = max(1, math.ceil(len(norms) * (1 - amount)))
    return norms.topk(n_keep).indices.sort().values


def _sliced(
    layer: nn.Module, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None
) -> nn.Module:
    weight, bias = layer.weight.detach(), layer.bias.detach()
    if out_idx is not None:
        weight, bias = weight[out_idx], bias[out_idx]
    if in_idx is not None:
        weight = weight[:, in_idx]
    if isinstance(layer, nn.Conv2d):
        groups = weight.shape[0] if _depthwise(layer) else 1
        new: nn.Module = nn.Conv2d(
            weight.shape[1] * groups,
            weight.shape[0],
            layer.kernel_size,
            layer.stride,
            layer.padding,
            groups=groups,
        )
    else:
        new = nn.Linear(weight.shape[1], weight.shape[0])
    new.weight.data.copy_(weight)
    new.bias.data.copy_(bias)
    return new


def _depthwise(layer: nn.Module) -> bool:
    return (
        isinstance(layer, nn.Conv2d)
        and layer.groups > 1
        and (layer.groups == layer.in_channels == layer.out_channels)
    )


def _sliced_norm(norm: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), eps=norm.eps, momentum=norm.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).data.copy_(getattr(norm, name).detach()[idx])
    return new


def prune_structured(model: nn.Sequential, amount: float) -> nn.Sequential:
    """Remove `amount` of the output channels/units of every hidden conv and linear
    layer (smallest L1 norm first) and the matching inputs of the layer after it; a
    depthwise convolution keeps the channels it is given, and a batch norm those of
    the layer before it (the DS-CNN)."""
    original = list(model)
    layers = list(model)
    weighted = [i for i, m in enumerate(layers) if isinstance(m, WEIGHTED)]
    keep_in: torch.Tensor | None = None
    for pos, i in enumerate(weighted):
        layer = layers[i]
        if _depthwise(layer):  # one filter per channel: it follows its input's cut
            if keep_in is not None:
                layers[i] = _sliced(layer, keep_in, None)
                if isinstance(layers[i + 1], nn.BatchNorm2d):
                    layers[i + 1] = _sliced_norm(layers[i + 1], keep_in)
            continue
        is_last = pos == len(weighted) - 1
        keep_out = None if is_last else _keep(layer.weight, amount)
        in_idx = keep_in
        before = original[weighted[pos - 1]] if pos else None
        if (
            keep_in is not None
            and isinstance(layer, nn.Linear)
            and isinstance(before, nn.Conv2d)
        ):
            # Flatten: each kept channel owns a contiguous block of features.
            block = layer.in_features // before.out_channels
            in_idx = (keep_in[:, None] * block + torch.arange(block)).flatten()
        layers[i] = _sliced(layer, keep_out, in_idx)
        if keep_out is not None and isinstance(layers[i + 1], nn.BatchNorm2d):
            layers[i + 1] = _sliced_norm(layers[i + 1], keep_out)
        keep_in = keep_out
    pruned = nn.Sequential(*layers)
    pruned.eval()
    return pruned


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, n_features: int) -> int:
    """Multiply-accumulates of one sample through the conv and linear layers."""
    total = 0

    def hook(layer: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += out[0].numel() * layer.in_channels * k // layer.groups
        else:
            total += layer.in_features * layer.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, WEIGHTED)
    ]
    with torch.no_grad():
        model(torch.zeros(1, n_features))
    for handle in handles:
        handle.remove()
    return total


def peak_activation_elements(model: nn.Sequential, n_features: int) -> int:
    """The largest input+output pair of any layer: what a runtime's arena must hold."""
    sizes = [n_features]
    x = torch.zeros(1, n_features)
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            sizes.append(x.numel())
    return max(a + b for a, b in zip(sizes, sizes[1:], strict=False))


def export_onnx(model: nn.Module, n_features: int, path: Path) -> Path:
    """torch.onnx (dynamo exporter) with a dynamic batch dimension, one file."""
    program = torch.onnx.export(
        model.eval(),
        (torch.zeros(1, n_features),),
        dynamo=True,
        input_names=["features"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(path, external_data=False)
    return path


class _Calibration(CalibrationDataReader):
    def __init__(self, rows: np.ndarray, input_name: str) -> None:
        self.rows = iter(np.asarray(rows, np.float32))
        self.name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self.rows, None)
        return None if row is None else {self.name: row[None, :]}


# Weights on 7 bits (ONNX Runtime's `reduce_range`). On x86 CPUs without VNNI
# (AVX2, AVX-512 before Cascade Lake) ONNX Runtime multiplies int8 with VPMADDUBSW,
# whose 16-bit sums saturate with full-range weights: the same file answered
# differently on such a CPU (the rentals model on dates agreed with torch on 89.8%
# of rows there, 100% on a VNNI CPU; 99.6% on both with 7-bit weights). Devices
# are such CPUs as often as not.
REDUCE_RANGE = True


def quantize_int8_static(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """Static QDQ quantization, per-channel int8 weights (7 bits: REDUCE_RANGE),
    int8 activations calibrated (min-max) on training rows."""
    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(out),
        _Calibration(calibration, "features"),
        nodes_to_exclude=preprocessing_nodes(onnx.load(str(prepared))),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        reduce_range=REDUCE_RANGE,
    )
    prepared.unlink()
    return out


def preprocessing_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes of a model's `Preprocess` (gaps filled, categories one-hot, dates
    taken apart, from raw columns) up to the node that subtracts its
    standardization's mean: left in float. Quantized, their Concat put raw grams
    (up to 6,300) and one-hot 0/1 on one int8 scale, and the penguins model fell
    from 0.98 to 0.44 accuracy. None for other models."""
    nodes = list(model.graph.node)
    if not nodes or nodes[0].op_type != "IsNaN":
        return []
    names = []
    for node in nodes:
        if any(name.endswith("standardize.mean") for name in node.input):
            break
        names.append(node.name)
    return names


def quantize_int8_dynamic(fp32: Path, out: Path) -> Path:
    """int8 weights (7 bits: REDUCE_RANGE), activations quantized on the fly at run
    time."""
    quantize_dynamic(
        str(fp32), str(out), weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE
    )
    return out
