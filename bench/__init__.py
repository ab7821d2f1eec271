"""Benchmarks: `make bench` runs bench.pipeline (the full stack against a raw Pillow loop)."""
