"""frontend: ONNX models loaded, checked, given static shapes and imported into Relax."""
