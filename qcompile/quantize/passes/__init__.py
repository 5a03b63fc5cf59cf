"""The quantization passes, one per module; `quantize/pipeline.py` declares their order."""
