"""Benchmarks that back every speed and quality claim in the README (`python -m benchmarks`)."""
