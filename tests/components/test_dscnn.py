"""MLPerf Tiny's keyword-spotting DS-CNN in both backends, and pruned as any other
model: its depthwise convolutions and batch norms follow the channels kept."""

from __future__ import annotations

import numpy as np
import torch

from components.optimization.compress import count_parameters, prune_structured
from components.training.model import ModelSpec, build_model

SPEC = ModelSpec(
    n_features=490,
    classes=list(range(12)),
    feature_columns=[f"c{i}" for i in range(490)],
    hidden_units=64,
    image_shape=(49, 10),
    network="dscnn",
)


def test_both_backends_build_mlperf_tinys_23756_parameters():
    from components.training.keras_train import build_keras

    keras_model = build_keras(SPEC, np.random.default_rng(0).random((20, 490)))
    trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert count_parameters(build_model(SPEC)) == trainable == 23_756
    assert keras_model.output_shape == (None, 12)


def _trained_looking(model: torch.nn.Sequential) -> torch.nn.Sequential:
    """Batch norms with statistics of their own, as after training."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def test_pruning_nothing_changes_no_answer():
    model = _trained_looking(build_model(SPEC))
    x = torch.randn(8, 490)
    same = prune_structured(model, 0.0)
    torch.testing.assert_close(same(x), model(x))


def test_pruning_half_the_channels_halves_every_block():
    model = _trained_looking(build_model(SPEC))
    pruned = prune_structured(model, 0.5)
    convs = [m for m in pruned if isinstance(m, torch.nn.Conv2d)]
    assert {m.out_channels for m in convs} == {32}
    depthwise = [m for m in convs if m.groups > 1]
    assert len(depthwise) == 4 and all(m.groups == 32 for m in depthwise)
    assert pruned(torch.randn(4, 490)).shape == (4, 12)
    assert count_parameters(pruned) < count_parameters(model) / 2
