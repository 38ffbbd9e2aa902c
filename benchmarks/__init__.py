"""MONET benchmark suite: `python benchmarks/run.py`."""
