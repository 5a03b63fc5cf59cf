"""The lowering passes (layouts for the dot-product instructions), one per module; `lower/pipeline.py` declares their order."""
