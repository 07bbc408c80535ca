"""Benchmarks: each ``bench_*.py`` module prints a table. Run them all with ``make bench``."""
