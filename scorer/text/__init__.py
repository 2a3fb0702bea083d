"""The text pipeline, torch- and spaCy-free: spaCy-exact tokenization in numba kernels
(``kernels``, ``specials``), ids for a vocabulary (``encode``), the vocabulary (``vocab``)."""
