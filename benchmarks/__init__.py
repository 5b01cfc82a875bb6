"""Benchmarks of `downloader` against curl, aria2c and requests; see benchmarks/README.md.

A package so that `python -m benchmarks` runs it from the repository root; the measuring code
lives in `benchmarks.bench`, one module per job.
"""
