"""The PyTorch models (a small CNN for images, an MLP for tabular rows, both taking raw
feature vectors: standardization lives inside the model), saved as weights + spec,
and the `Classifier` interface both backends answer (`components.backends` loads
either)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from components.data.features import MODEL_SPEC, encoding_from_json
from components.training import dateparts

WEIGHTS = "model.pt"
SPEC = MODEL_SPEC


@dataclass(frozen=True)
class ModelSpec:
    n_features: int
    classes: list[int | str]
    feature_columns: list[str]
    hidden_units: int
    image_shape: tuple[int, int] | None = None
    backend: str = "torch"
    # The fitted `features:` section (components/data/features.py, as JSON); None:
    # every column numeric and gap-free, taken as it is.
    encoding: list[dict] | None = None
    # train.network: auto (cnn for images, mlp for tables) or dscnn.
    network: str = "auto"

    @property
    def kind(self) -> str:
        if self.network == "dscnn":
            return "dscnn"
        return "cnn" if self.image_shape else "mlp"


class Standardize(nn.Module):
    """(x - mean) / std with the training split's statistics kept as buffers."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def fit(self, x: torch.Tensor) -> None:
        mean, std = standardization_stats(x.numpy())
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Preprocess(nn.Module):
    """The fitted `features:` section inside the model: gaps filled (the training
    split's median, most frequent value or a constant), "was missing" indicators
    added, categories (their index) one-hot encoded, dates (minutes since their
    origin) taken apart into the calendar parts named, then standardized. Exports
    to ONNX as plain ops (IsNaN, Where, Equal, integer Div), so the file takes raw
    rows."""

    def __init__(self, encoding: list[dict]) -> None:
        super().__init__()
        columns = encoding_from_json(encoding)
        fill = [0.0 if np.isnan(c.fill) else c.fill for c in columns]
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32))
        self.plain = [
            i for i, c in enumerate(columns) if c.categories is None and c.parts is None
        ]
        self.categorical = [
            (i, len(c.categories)) for i, c in enumerate(columns) if c.categories
        ]
        self.dates = [
            (i, c.origin or 0, c.parts) for i, c in enumerate(columns) if c.parts
        ]
        self.indicators = [i for i, c in enumerate(columns) if c.indicator]
        width = sum(c.width for c in columns)
        self.standardize = Standardize(width)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        gap = torch.isnan(x)
        filled = torch.where(gap, self.fill, x)
        parts = [filled[:, self.plain]] if self.plain else []
        for i, k in self.categorical:
            codes = torch.arange(k, dtype=x.dtype, device=x.device)
            parts.append((filled[:, i : i + 1] == codes).to(x.dtype))
        for i, origin, names in self.dates:
            parts.append(dateparts.parts(filled[:, i], origin, names))
        if self.indicators:
            parts.append(gap[:, self.indicators].to(x.dtype))
        return torch.cat(parts, dim=1)

    def fit(self, x: torch.Tensor) -> None:
        self.standardize.fit(self.expand(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.expand(x))


def network_inputs(spec: ModelSpec) -> int:
    """The network's width after preprocessing."""
    if not spec.encoding:
        return spec.n_features
    return sum(c.width for c in encoding_from_json(spec.encoding))


def standardization_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std; a near-constant feature's std is floored at 5% of
    the median std, so a rare value cannot blow up the scale (int8 calibration
    would spend its whole range on it)."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    positive = std[std > 0]
    floor = 0.05 * float(np.median(positive)) if positive.size else 1.0
    return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


DSCNN_KERNEL, DSCNN_BLOCKS = (10, 4), 4


def dscnn_body(spec: ModelSpec) -> list[nn.Module]:
    """MLPerf Tiny's keyword-spotting DS-CNN (keras_model.py, after Zhang et al.
    2017, "Hello Edge"): a 10 x 4 convolution with stride 2, four blocks of a 3 x 3
    depthwise and a 1 x 1 pointwise convolution, each with batch normalization and
    ReLU, then average pooling over what is left."""
    if not spec.image_shape:
        raise ValueError("train.network dscnn needs data.image_shape (e.g. [49, 10])")
    h, w = spec.image_shape
    c = spec.hidden_units
    # TensorFlow's 'same' output (25 x 5 of 49 x 10) from symmetric padding, one
    # more row than 'same' puts above: a Pad op of its own (asymmetric) did not
    # survive onnx2tf's layout change.
    pad = tuple(
        -(-max((-(-n // 2) - 1) * 2 + k - n, 0) // 2)
        for n, k in zip((h, w), DSCNN_KERNEL)
    )
    body: list[nn.Module] = [
        nn.Unflatten(1, (1, h, w)),
        nn.Conv2d(1, c, DSCNN_KERNEL, stride=2, padding=pad),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.Dropout(0.2),
    ]
    for _ in range(DSCNN_BLOCKS):
        body += [
            nn.Conv2d(c, c, 3, padding=1, groups=c),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
        ]
    # Average pooling over the whole map, as MLPerf Tiny's (25 x 5) pool: exported
    # as GlobalAveragePool, which onnx2tf turns into TFLM's MEAN.
    return [*body, nn.Dropout(0.4), nn.AdaptiveAvgPool2d(1), nn.Flatten()]


def build_model(spec: ModelSpec) -> nn.Sequential:
    n_classes = len(spec.classes)
    if spec.network == "dscnn":
        body = dscnn_body(spec)
    elif spec.image_shape:
        h, w = spec.image_shape
        body: list[nn.Module] = [
            nn.Unflatten(1, (1, h, w)),
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (h // 2) * (w // 2), spec.hidden_units),
            nn.ReLU(),
            nn.Dropout(0.2),
        ]
    else:
        body = [
            nn.Linear(network_inputs(spec), spec.hidden_units),
            nn.ReLU(),
            nn.Linear(spec.hidden_units, spec.hidden_units),
            nn.ReLU(),
        ]
    first = Preprocess(spec.encoding) if spec.encoding else Standardize(spec.n_features)
    model = nn.Sequential(first, *body, nn.Linear(spec.hidden_units, n_classes))
    _init_weights(model)
    return model


def _init_weights(model: nn.Sequential) -> None:
    """He initialization before ReLUs, Xavier for the output layer."""
    layers = [m for m in model if isinstance(m, nn.Conv2d | nn.Linear)]
    for layer in layers[:-1]:
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    nn.init.xavier_uniform_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_model(model: nn.Module, spec: ModelSpec, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS)
    (folder / SPEC).write_text(json.dumps(asdict(spec), indent=2) + "\n")


def load_spec(folder: Path) -> ModelSpec:
    raw = json.loads((folder / SPEC).read_text())
    if raw.get("image_shape"):
        raw["image_shape"] = tuple(raw["image_shape"])
    return ModelSpec(**raw)


def load_model(folder: Path) -> tuple[nn.Sequential, ModelSpec]:
    spec = load_spec(folder)
    model = build_model(spec)
    model.load_state_dict(torch.load(folder / WEIGHTS, weights_only=True))
    model.eval()
    return model, spec


def predict_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32))
        return torch.softmax(logits, dim=1).numpy()


class Classifier(Protocol):
    spec: ModelSpec

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class TorchClassifier:
    model: nn.Module
    spec: ModelSpec

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return predict_proba(self.model, x)
