"""The `evaluate` stage and what judges a model: metrics and the registry's gates."""
