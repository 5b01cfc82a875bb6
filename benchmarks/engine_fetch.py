"""The transfer engine alone: `transfer.fetch()` of one big file from the local nginx origin,
with one connection and with segments, against `requests` streaming the same file in the
same process. Not a test: prints MiB/s and the process's CPU seconds per GiB (all threads; less
sensitive to a busy machine than the wall clock), medians of the runs, the variants taking
turns.

    python benchmarks/engine_fetch.py [--size-mib 256] [--repeats 5] [--segments 1,8]

Run it with `PYTHONPATH=<other checkout>/src` to measure another commit's engine the same way
(the figures of issue 21's split of `_Fetch` were taken so).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench.config import MiB
from benchmarks.bench.files import write_random
from benchmarks.bench.origin import start_origin
from benchmarks.bench.processes import Processes
from downloader.engine.transfer import TransferRequest, fetch


def plain_requests(url: str, path: Path) -> None:
    """The floor: one streamed GET, 1 MiB chunks, straight to a file."""
    with requests.get(url, stream=True, timeout=60) as response, path.open("wb") as out:
        response.raise_for_status()
        for chunk in response.iter_content(MiB):
            out.write(chunk)


def engine(url: str, path: Path, segments: int, sha256: str) -> None:
    request = TransferRequest(
        url=url, dest=path, dest_is_dir=False, segments=segments, sha256=sha256
    )
    result = fetch(request)
    assert result.download_path == path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--segments", default="1,8", help="comma-separated segment counts")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx is missing: apt-get install nginx-light")
    work = Path(tempfile.mkdtemp(prefix="engine-fetch-"))
    procs = Processes([work])
    try:
        root = work / "origin"
        root.mkdir()
        write_random(root, "tiny.bin", 1024)
        big = write_random(root, "big.bin", args.size_mib * MiB)
        origin = start_origin(procs, nginx, work, root)
        url = origin.url(big.name)
        variants = {"requests": lambda path: plain_requests(url, path)}
        for count in (int(n) for n in args.segments.split(",")):
            variants[f"fetch segments={count}"] = lambda path, n=count: engine(
                url, path, n, big.sha256
            )
        timings: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                path = work / "out.bin"
                os.sync()
                started, cpu_started = time.perf_counter(), time.process_time()
                run(path)
                timings[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
                with path.open("rb") as done:
                    assert hashlib.file_digest(done, "sha256").hexdigest() == big.sha256
                path.unlink()
        size = big.size / MiB
        for name, seconds in timings.items():
            rates = sorted(size / s for s in seconds)
            per_gib = statistics.median(cpu[name]) * 1024 / size
            print(
                f"{name:24} median {statistics.median(rates):7.0f} MiB/s, "
                f"CPU {per_gib:5.2f} s/GiB (runs: {', '.join(f'{r:.0f}' for r in rates)})"
            )
    finally:
        for process in list(procs.running):
            procs.stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
