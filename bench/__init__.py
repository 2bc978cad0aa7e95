"""Benchmarks: each `bench/bench_<name>.py` prints its figures beside a baseline measured in the same run.

`make bench` runs them all; `python -m bench.bench_<name>` runs one. They need the services of
`make services` (or DATABASE_URL / REDIS_URL) and a migrated database, and they clean up after themselves.
"""
