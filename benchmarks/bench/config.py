"""Sizes, paths and limits every part of the benchmark shares, in one place.

The full run and the `--quick` smoke run differ only in the `Profile` they pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20
BENCH_DIR = Path(__file__).resolve().parent.parent
RESULTS_JSON = BENCH_DIR / "results.json"
RESULTS_PNG = BENCH_DIR / "results.png"
README = BENCH_DIR / "README.md"
INSTALL_HINT = "apt-get install nginx-light aria2 curl"
CAP_PER_CONNECTION = "25m"
SAMPLE_INTERVAL = 0.05


class BenchError(RuntimeError):
    """A measurement that cannot be trusted (wrong size, failed job, tool error)."""


class NotAvailable(RuntimeError):
    """An interface a case needs is not in this build (yet); the case says so and is skipped."""


@dataclass(frozen=True)
class Profile:
    """How big and how often: the full run and the --quick smoke run."""

    name: str
    big_size: int
    rss_small_size: int
    small_count: int
    repeats: int
    enqueue_count: int
    latency_jobs: int
    startup_runs: int
    multifile_parts: tuple[int, ...]
    queue_sizes: tuple[int, int]
    batch_jobs: int
    rest_batches: int
    small_size: int = 64 * KiB
    tiny_size: int = KiB
    concurrency: int = 8
    rest_batch_size: int = 1000


FULL = Profile(
    "full",
    big_size=1 << 30,
    rss_small_size=256 * MiB,
    small_count=1000,
    repeats=3,
    enqueue_count=1000,
    latency_jobs=200,
    startup_runs=5,
    multifile_parts=(200, 2000, 10000),
    queue_sizes=(1000, 1_000_000),
    batch_jobs=100_000,
    rest_batches=20,
)
QUICK = Profile(
    "quick",
    big_size=256 * MiB,
    rss_small_size=64 * MiB,
    small_count=200,
    repeats=1,
    enqueue_count=200,
    latency_jobs=50,
    startup_runs=3,
    multifile_parts=(50, 200),
    queue_sizes=(1000, 10_000),
    batch_jobs=5_000,
    rest_batches=2,
)
