"""scorer: predict a product review's star rating from its text, at scale."""

__version__ = "0.1.0"
