"""measure: accuracy (eval) and latency (bench) of built models, beside onnxruntime."""
