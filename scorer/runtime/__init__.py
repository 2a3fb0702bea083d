"""What scoring needs and nothing else (no torch, no spaCy): the model directory and its
config, the ONNX contract and sessions, the scoring steps every engine shares, and the
output (its columns, its parts, the assembled file)."""
