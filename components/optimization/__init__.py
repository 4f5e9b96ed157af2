"""The `optimize` stage: pruning, int8 quantization, ONNX and TFLite device files,
and the runtimes that run them (ONNX Runtime, LiteRT)."""
