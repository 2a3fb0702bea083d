"""The PyTorch model (``model``), its wide bag-of-n-grams and linear paths (``wide``,
``linear``), and where it runs (``device``). Training and export import this; scoring never."""
