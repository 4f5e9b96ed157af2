"""BentoML service for the registry champion (not built yet; see README)."""
