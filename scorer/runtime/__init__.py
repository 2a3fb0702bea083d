"""What scoring needs and nothing else (no torch, no spaCy): the model directory and its
config, the ONNX contract and sessions, and the scoring steps every engine shares."""
