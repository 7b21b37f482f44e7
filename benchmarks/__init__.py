"""Benchmarks of recforge on real data: ``python -m benchmarks <name> ...`` (see README.md)."""
