"""Benchmarks. `python -m bench` runs every module here that exposes `run() -> None`.

Add a benchmark by dropping `bench/<name>.py` with a `run()` that prints its own figures;
`python -m bench <name> ...` runs only the named ones.
"""
