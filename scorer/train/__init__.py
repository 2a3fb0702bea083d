"""Training: the job (``job``), its data (``data``), fitting (``fit``), the search, blend and
refit, the recipes (``presets``), distillation (``teacher``), checkpoints and the report."""
