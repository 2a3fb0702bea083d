"""The ONNX exporter, installed as ``scorer.export`` (see pyproject.toml)."""
