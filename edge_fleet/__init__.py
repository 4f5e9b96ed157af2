"""OTA rollout of quantized models to edge devices (not built yet; see README)."""
