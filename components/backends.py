"""A trained model folder of either backend (PyTorch or Keras), loaded behind one
`Classifier` interface for evaluation, optimization and tracking."""

from __future__ import annotations

from pathlib import Path

from components.training.model import Classifier, TorchClassifier, load_model, load_spec


def load_classifier(folder: Path) -> Classifier:
    """A trained model folder of either backend, ready to predict."""
    spec = load_spec(folder)
    if spec.backend == "keras":
        # TensorFlow (seconds to import, GBs of memory) only for a Keras model.
        from components.training.keras_train import load_keras

        return load_keras(folder)
    model, spec = load_model(folder)
    return TorchClassifier(model, spec)
