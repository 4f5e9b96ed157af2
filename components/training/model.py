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

WEIGHTS = "model.pt"
SPEC = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    n_features: int
    classes: list[int | str]
    feature_columns: list[str]
    hidden_units: int
    image_shape: tuple[int, int] | None = None
    backend: str = "torch"

    @property
    def kind(self) -> str:
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


def standardization_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std; a near-constant feature's std is floored at 5% of
    the median std, so a rare value cannot blow up the scale (int8 calibration
    would spend its whole range on it)."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    positive = std[std > 0]
    floor = 0.05 * float(np.median(positive)) if positive.size else 1.0
    return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def build_model(spec: ModelSpec) -> nn.Sequential:
    n_classes = len(spec.classes)
    if spec.image_shape:
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
            nn.Linear(spec.n_features, spec.hidden_units),
            nn.ReLU(),
            nn.Linear(spec.hidden_units, spec.hidden_units),
            nn.ReLU(),
        ]
    model = nn.Sequential(
        Standardize(spec.n_features), *body, nn.Linear(spec.hidden_units, n_classes)
    )
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
