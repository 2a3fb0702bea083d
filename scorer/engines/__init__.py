"""The two engines over the same scoring steps: ``local`` (one machine) and ``ray``."""
