"""Benchmarks of the dispatcher against the issue's goals; run ``python -m bench.run``."""
